"""Benchmark datasets (digits, MNIST, Fashion-MNIST, CIFAR-10/100) as numpy arrays."""
from .datasets import (DATASETS, DatasetError, DatasetInfo, batches, clear_cache, dataset_info,
                       load_split)

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "batches", "clear_cache", "dataset_info",
           "load_split"]

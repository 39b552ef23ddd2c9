"""Dataset layer: load benchmark image datasets as float32 (N, C, H, W) in [0, 1].

``mnist-N`` / ``fashion-mnist-N`` (N even, 30..224; e.g. ``fashion-mnist-32``) are the 28x28 sets
zero-padded to N x N, the original image at the centre ((N - 28) / 2 zero rows and columns on each
side; LeNet-5's 32x32 convention): a real 32x32 test set without CIFAR's files.

Files are read in their original distribution formats (gzip IDX for MNIST-like
sets, python pickles for CIFAR) and validated strictly, so a bad download fails
with one clear DatasetError instead of a shape error deep inside training.
"""
from __future__ import annotations

import codecs
import functools
import gzip
import importlib
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset could not be found or its files are malformed."""



DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")

_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_NAMES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge
bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard
lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal
shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_DIGIT_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple  # per sample, channel-first
    num_classes: int
    class_names: tuple | None


_INFO = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, _DIGIT_NAMES),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, _DIGIT_NAMES),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, _FASHION_NAMES),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, _CIFAR10_NAMES),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, _CIFAR100_NAMES),
}


PADDABLE = ("mnist", "fashion-mnist")   # the 28x28 sets a ``NAME-N`` name zero-pads
PAD_SIZES = range(30, 225, 2)           # N of ``NAME-N``: even, so the image sits exactly at the centre


def padded(name: str) -> tuple[str, int | None]:
    """(base dataset, padded size) of a dataset name: ``fashion-mnist-32`` -> ('fashion-mnist', 32),
    ``mnist`` -> ('mnist', None). A ``NAME-N`` name with a bad N or base raises a one-line DatasetError."""
    base, sep, size = name.rpartition("-")
    if not sep or name in _INFO or not size.isdigit():
        return name, None
    if base not in PADDABLE:
        if base not in _INFO:   # not a NAME-N name at all: dataset_info's "unknown dataset"
            return name, None
        raise DatasetError(f"dataset {name!r}: zero-padding (NAME-N) applies to {' and '.join(PADDABLE)} only")
    n = int(size)
    if n not in PAD_SIZES:
        raise DatasetError(f"dataset {name!r}: padded size must be an even number in {PAD_SIZES.start}.."
                           f"{PAD_SIZES.stop - 1} (28x28 images centred with equal zero borders), got {n}")
    return base, n


def dataset_info(name: str) -> DatasetInfo:
    base, size = padded(name)
    if base not in _INFO:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}, "
                           f"or {'/'.join(PADDABLE)}-N (zero-padded to N x N, e.g. fashion-mnist-32)")
    info = _INFO[base]
    if size is None:
        return info
    return DatasetInfo(name, (info.input_shape[0], size, size), info.num_classes, info.class_names)


# ---------------------------------------------------------------- IDX (MNIST-like)
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


MAX_IDX_BYTES = 1 << 30   # largest IDX payload read (EMNIST byclass, the largest MNIST-like set, is ~0.55 GB)


def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An IDX array from a gzip file, reading only the bytes its header declares (a gzip bomb behind a
    valid header is never inflated past them) and refusing dims that multiply past MAX_IDX_BYTES."""
    header_len = 4 * (1 + ndim)
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(header_len)
            if len(head) < header_len:
                raise DatasetError(f"{path}: file too short for an IDX header ({len(head)} bytes)")
            header = struct.unpack(f">{1 + ndim}I", head)
            if header[0] != magic:
                raise DatasetError(f"{path}: bad IDX magic number {header[0]} (expected {magic})")
            dims = tuple(header[1:])
            expected = math.prod(dims)   # exact: 3 dims of up to 2**32 overflow int64
            if expected > MAX_IDX_BYTES:
                raise DatasetError(f"{path}: header declares {dims[0]} items of shape {dims[1:]} ({expected} bytes), "
                                   f"more than the {MAX_IDX_BYTES} bytes an IDX dataset may hold")
            payload = f.read(expected)
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    if len(payload) != expected or extra:
        got = f"{len(payload)}" if not extra else f"more than {expected}"
        raise DatasetError(f"{path}: header declares {dims[0]} items of shape {dims[1:]} "
                           f"({expected} bytes) but payload has {got} bytes")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _find_idx_dir(name: str, split: str, data_dir: Path) -> Path:
    # Accept the files directly in data_dir, in a per-dataset subfolder (shared data
    # layout) or in torchvision's download layout.
    for folder in (data_dir, data_dir / name, data_dir / _TORCHVISION_DIRS[name]):
        if (folder / _IDX_FILES[split][0]).is_file():
            return folder
    raise DatasetError(f"{name} {split} images not found: expected {data_dir / _IDX_FILES[split][0]} "
                       f"or {data_dir / name / _IDX_FILES[split][0]}")


def _load_idx(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    img_path, lbl_path = (folder / f for f in _IDX_FILES[split])
    if not lbl_path.is_file():
        raise DatasetError(f"{name} {split} labels not found: expected {lbl_path}")
    images = _parse_idx(img_path, 2051, 3)
    labels = _parse_idx(lbl_path, 2049, 1)
    if images.shape[1:] != dataset_info(name).input_shape[1:]:
        raise DatasetError(f"{img_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DatasetError(f"{folder}: {len(images)} images but {len(labels)} labels for {split} split")
    return images[:, None], labels.astype(np.int64)


# ---------------------------------------------------------------- CIFAR pickles
def _np_core(module: str, attr: str):
    # numpy 2 moved numpy.core to numpy._core (1.26 has both); pickles may name either.
    try:
        return getattr(importlib.import_module("numpy._core." + module), attr)
    except ImportError:
        return getattr(importlib.import_module("numpy.core." + module), attr)


@functools.lru_cache(maxsize=None)
def _allowed_globals() -> dict:
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}  # protocol-2 pickles encode bytes this way
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _np_core("multiarray", "_reconstruct")
        allowed[(f"{core}.multiarray", "scalar")] = _np_core("multiarray", "scalar")
        allowed[(f"{core}.numeric", "_frombuffer")] = _np_core("numeric", "_frombuffer")
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Only rebuilds numpy arrays/lists/dicts: an untrusted pickle cannot call arbitrary code."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DatasetError(f"{self._path}: pickle references forbidden global {module}.{name}") from None


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"CIFAR batch not found: expected {path}")
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, path).load()
    except DatasetError:  # a refused global: keep its precise message
        raise
    except Exception as exc:  # any unpickling failure means a corrupt file
        raise DatasetError(f"{path}: corrupt or unreadable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
    # Original batches have bytes keys; pickles written by python 3 code may use str.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DatasetError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: {len(data)} images but labels have shape {labels.shape}")
    # Rows are 1024 red, then green, then blue values, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


_CIFAR_LAYOUT = {"cifar10": ("cifar-10-batches-py", "labels",
                             {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}),
                 "cifar100": ("cifar-100-python", "fine_labels", {"train": ["train"], "test": ["test"]})}


def _find_cifar_dir(name: str, split: str, data_dir: Path) -> Path:
    folder, _, files = _CIFAR_LAYOUT[name]
    for cand in (data_dir, data_dir / folder, data_dir / name / folder, data_dir / name):
        if (cand / files[split][0]).is_file():
            return cand
    raise DatasetError(f"{name} {split} data not found: expected {data_dir / folder / files[split][0]}")


def _load_cifar(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    _, label_key, files = _CIFAR_LAYOUT[name]
    parts = [_cifar_batch(folder / f, label_key) for f in files[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------- digits
def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # values 0..16, stored small for the cache
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=360, stratify=d.target, random_state=0)
    return (x_tr, y_tr.astype(np.int64)) if split == "train" else (x_te, y_te.astype(np.int64))


# ---------------------------------------------------------------- public API
_CACHE: dict = {}  # (name, split, folder, file stats) -> raw uint8 images, labels
_CACHE_MAX = 8


def clear_cache() -> None:
    _CACHE.clear()


def _raw_split(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    """Undecoded uint8 images + labels, cached; the key includes file stats so edits invalidate it."""
    if name == "digits":
        key, loader = (name, split), lambda: _load_digits(split)
    else:
        root = Path(data_dir if data_dir is not None else os.environ.get("SNNCC_DATA_DIR", "data"))
        if not root.is_dir():
            raise DatasetError(f"data directory not found: {root} (needed for {name})")
        finder, reader = (_find_cifar_dir, _load_cifar) if name.startswith("cifar") else (_find_idx_dir, _load_idx)
        folder = finder(name, split, root).resolve()
        stats = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file())
        key, loader = (name, split, str(folder), stats), lambda: reader(name, split, folder)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = loader()
    return _CACHE[key]


def load_split(name: str, split: str, data_dir=None, limit: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (x float32 (N, C, H, W) in [0, 1], y int64 (N,)); `limit` picks a seeded random subset."""
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r} for {name}; expected 'train' or 'test'")
    base, size = padded(name)
    x, y = _raw_split(base, split, data_dir)
    if y.size and (y.min() < 0 or y.max() >= info.num_classes):
        raise DatasetError(f"{name} {split}: labels outside 0..{info.num_classes - 1}")
    if limit is not None and limit < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:max(int(limit), 0)])
        x, y = x[idx], y[idx]
    if len(y) == 0:
        raise DatasetError(f"{name} {split}: dataset is empty (limit={limit})")
    scale = np.float32(16.0 if name == "digits" else 255.0)
    if size is not None:   # zero borders (exact: 0 / 255 = 0), the original pixels at the centre
        b = (size - x.shape[-1]) // 2
        x = np.pad(x, ((0, 0), (0, 0), (b, b), (b, b)))
    # Scaling yields a fresh array, so callers may mutate results without touching the cache.
    return x.astype(np.float32) / scale, y.copy()


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
            seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float32, int64) tensor mini-batches; the order depends only on `seed`."""
    if len(x) != len(y):
        raise DatasetError(f"batches: {len(x)} inputs but {len(y)} labels")
    if batch_size <= 0:
        raise DatasetError(f"batches: batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield (torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)),
               torch.from_numpy(np.asarray(y[idx], dtype=np.int64)))

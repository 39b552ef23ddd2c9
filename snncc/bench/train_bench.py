"""Training-step cost of BSD against BPTT on the same architecture and batch.

``bench_train`` builds the BSD and the BPTT model of one architecture (the
paper's MLP or CNN for ``dataset``), feeds both the same random batch of the
dataset's shape (no data files needed) and times full optimizer steps
(``train_step``: forward of all paths, backward of the summed losses, clipping,
AdamW update from ``make_optimizer``, all exactly as in training), interleaving
the two methods step by step (alternating which goes first) so machine load
affects both alike. Reports the median ms per step of each and the ratio
bsd / bptt, with the load average before and after the run.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from snncc.data.datasets import dataset_info
from snncc.training.train import TrainConfig, build_model, make_optimizer, train_step


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _loadavg():
    """1/5/15-minute load average (None where the OS does not report one)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def bench_train(model: str = "mlp", dataset: str = "mnist", batch_size: int = 128, steps: int = 20,
                warmup: int = 3, timesteps: int = 4, width: float = 1.0, device: str = "cpu",
                threads: int | None = None, seed: int = 0) -> dict:
    """-> {"bsd_ms", "bptt_ms" (median per step), "ratio" (bsd / bptt), per-step lists, setup}."""
    if steps < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1 and warmup >= 0")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        info = dataset_info(dataset)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch_size, *info.input_shape, generator=g).to(device)
        y = torch.randint(0, info.num_classes, (batch_size,), generator=g).to(device)
        load_before = _loadavg()
        runs = {}
        for method in ("bsd", "bptt"):
            cfg = TrainConfig(method=method, model=model, dataset=dataset, timesteps=timesteps, width=width)
            net = build_model(cfg).to(device)
            # the optimizer and clipping training uses (same settings for both methods; lr 1e-4 as App. E.2.1)
            runs[method] = (net, make_optimizer(net, 1e-4, cfg.weight_decay), cfg.resolved().grad_clip)
        times = {m: [] for m in runs}
        for i in range(warmup + steps):
            order = ("bsd", "bptt") if i % 2 == 0 else ("bptt", "bsd")
            for method in order:
                net, opt, clip = runs[method]
                _sync(device)
                t0 = time.perf_counter()
                train_step(net, opt, x, y, clip)
                _sync(device)
                if i >= warmup:
                    times[method].append((time.perf_counter() - t0) * 1e3)
        bsd, bptt = statistics.median(times["bsd"]), statistics.median(times["bptt"])
        sizes = runs["bsd"][0].sizes if model == "mlp" else runs["bsd"][0].channels
        return {"model": model, "dataset": dataset, "architecture": list(sizes), "batch_size": batch_size,
                "timesteps": timesteps, "steps": steps, "device": str(device), "threads": torch.get_num_threads(),
                "bsd_ms": bsd, "bptt_ms": bptt, "ratio": bsd / bptt, "target_ratio": 1.5,
                "bsd_ms_all": times["bsd"], "bptt_ms_all": times["bptt"],
                "loadavg_before": load_before, "loadavg_after": _loadavg()}
    finally:
        torch.set_num_threads(previous)

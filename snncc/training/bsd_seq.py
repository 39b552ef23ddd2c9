"""Training driver for BSD-RNNs on sequences (App. E.2.3): next-character text and time series.

``train_seq(cfg, out_dir)`` mirrors :func:`snncc.training.train.train`: deterministic
for a seed, and after every epoch it atomically rewrites ``out_dir/model.pt``
(loadable with ``weights_only=True``) and ``out_dir/metrics.json`` whose history
has train loss, the test metric(s) -- element-wise accuracy for text, MSE and MAE
on z-scored values for time series -- firing rates, the Hamming similarity of the
Type 1 and Type 2 hidden spikes and the W-Theta alignment, so
:func:`snncc.analysis.bsd_plots.plot_run` plots it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from snncc.data.sequences import SequenceData, load_sequences
from snncc.fileio import write_json
from snncc.training.bsd import INTERLAYER_LOSSES, firing_rates
from snncc.training.bsd_rnn import TASKS, BSDRNN
from snncc.training.train import (CheckpointError, ConfigError, TrainingDiverged, _check_choice, _check_float,
                                  _check_int, _deterministic, _epoch_seed, apply_local_losses,
                                  hamming_similarity, make_scheduler, read_checkpoint,
                                  write_checkpoint)

SEQ_CHECKPOINT_FORMAT = "snncc-seq-checkpoint/1"
# E.2.3: threshold 0.8 (Electricity), batch 64 (128 for Electricity). The paper's 1.0 for text
# (Harry Potter) leaves our hidden layer silent (measured firing rate 0.0 on tinyshakespeare: a one-hot
# input drives one column of W_ih, ~U(+-1/sqrt(V)) at init, and ReCo is scale-free), so text uses 0.1.
TASK_DEFAULTS = {"text": dict(v_th=0.1, batch_size=64), "timeseries": dict(v_th=0.8, batch_size=128)}


@dataclass
class SeqConfig:
    """A BSD-RNN run. None fields take TASK_DEFAULTS; thresholds of both types are equal (E.2.3)."""

    task: str = "text"
    data_path: str | None = None  # None: the shared tinyshakespeare / exchange_rate file
    seq_len: int = 32
    stride: int | None = None  # window stride; None: seq_len (non-overlapping)
    hidden: int = 300
    epochs: int = 10
    train_samples: int | None = None  # number of windows (seeded subset)
    test_samples: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    v_th: float | None = None
    v_th_backward: float | None = None
    tau: float = 2.0
    lam: float = 0.6
    interlayer_loss: str = "reco"
    temperature: float = 0.1
    grad_clip: float | None = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    seed: int = 0

    def validate(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("interlayer_loss", self.interlayer_loss, INTERLAYER_LOSSES)
        for name in ("seq_len", "hidden", "epochs"):
            _check_int(name, getattr(self, name), 1)
        for name in ("stride", "train_samples", "test_samples", "batch_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)
        _check_int("warmup_steps", self.warmup_steps, 0)
        for name in ("lr", "temperature", "v_th", "v_th_backward"):
            if getattr(self, name) is not None:
                _check_float(name, getattr(self, name), positive=True)
        for name in ("lam", "weight_decay"):
            _check_float(name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, positive=True)
        if not (isinstance(self.tau, (int, float)) and self.tau > 1):
            raise ConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")

    def resolved(self) -> "SeqConfig":
        self.validate()
        d = TASK_DEFAULTS[self.task]
        v_th = self.v_th if self.v_th is not None else d["v_th"]
        return replace(self, v_th=v_th, v_th_backward=self.v_th_backward if self.v_th_backward is not None else v_th,
                       batch_size=self.batch_size or d["batch_size"], stride=self.stride or self.seq_len,
                       data_path=None if self.data_path is None else str(self.data_path))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "SeqConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(map(str, unknown))}")
        return cls(**d)


def load_data(cfg: SeqConfig, split: str) -> SequenceData:
    limit = cfg.train_samples if split == "train" else cfg.test_samples
    return load_sequences(cfg.task, split, cfg.data_path, seq_len=cfg.seq_len, stride=cfg.stride or cfg.seq_len,
                          limit=limit, seed=cfg.seed)


def build_rnn(cfg: SeqConfig, data: SequenceData) -> BSDRNN:
    cfg = cfg.resolved()
    return BSDRNN(data.input_size, data.output_size, hidden=cfg.hidden, task=cfg.task, v_th=cfg.v_th,
                  v_th_backward=cfg.v_th_backward, tau=cfg.tau, lam=cfg.lam, interlayer=cfg.interlayer_loss,
                  temperature=cfg.temperature)


def _batches(data: SequenceData, batch_size: int, shuffle: bool, seed: int):
    order = np.random.default_rng(seed).permutation(len(data.x)) if shuffle else np.arange(len(data.x))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield torch.from_numpy(data.x[idx]), torch.from_numpy(data.y[idx])


@torch.no_grad()
def evaluate_seq(model: BSDRNN, data: SequenceData, batch_size: int = 256) -> dict:
    """Text: {"test_accuracy"} (element-wise, eq. E.2.3); series: {"test_mse", "test_mae"} (eqs. 23-24)."""
    model.eval()
    n, correct, se, ae = 0, 0, 0.0, 0.0
    for xb, yb in _batches(data, batch_size, False, 0):
        out = model(xb)
        if model.task == "text":
            correct += int((out.argmax(-1) == yb).sum())
            n += yb.numel()
        else:
            se += float(((out - yb) ** 2).sum())
            ae += float((out - yb).abs().sum())
            n += yb.numel()
    if model.task == "text":
        return {"test_accuracy": correct / n}
    return {"test_mse": se / n, "test_mae": ae / n}


def seq_train_step(model: BSDRNN, optimizer, x, y, grad_clip=1.0):
    return apply_local_losses(model, optimizer, x, y, grad_clip)


def _save(path: Path, model, cfg: SeqConfig, epoch: int, data: SequenceData) -> None:
    write_checkpoint(path, SEQ_CHECKPOINT_FORMAT, cfg.to_dict(), model.state_dict(), epoch,
                     shape={"n_in": model.n_in, "n_out": model.n_out}, vocab=data.vocab)


def train_seq(cfg: SeqConfig, out_dir, progress: bool = True, threads: int | None = None) -> dict:
    """Train a BSD-RNN; writes out_dir/model.pt and out_dir/metrics.json every epoch; returns the metrics.

    Raises ConfigError, SequenceError (missing / malformed data) or TrainingDiverged.
    """
    cfg = cfg.resolved()
    out = Path(out_dir)
    with _deterministic(cfg.seed, threads):
        train_data, test_data = load_data(cfg, "train"), load_data(cfg, "test")
        model = build_rnn(cfg, train_data)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * math.ceil(len(train_data.x) / cfg.batch_size)
        scheduler, warm = make_scheduler(optimizer, steps, cfg.warmup_steps)
        metrics = {"history": [], "config": cfg.to_dict(), "effective_warmup_steps": warm,
                   "train_windows": len(train_data.x), "test_windows": len(test_data.x)}
        with tqdm(total=steps, desc=f"bsd-rnn {cfg.task}", disable=not progress, unit="batch") as bar:
            for epoch in range(1, cfg.epochs + 1):
                start, loss_sum, rates, hams = time.perf_counter(), 0.0, {}, {}
                for step, (xb, yb) in enumerate(_batches(train_data, cfg.batch_size, True,
                                                         _epoch_seed(cfg.seed, epoch))):
                    try:
                        loss, info = seq_train_step(model, optimizer, xb, yb, cfg.grad_clip)
                    except TrainingDiverged as exc:
                        raise TrainingDiverged(f"epoch {epoch}, step {step + 1}: {exc}", exc.layer) from None
                    scheduler.step()
                    loss_sum += loss
                    for acc, vals in ((rates, firing_rates(info["spikes"])), (hams, hamming_similarity(info["spikes"]))):
                        for k, v in vals.items():
                            acc[k] = acc.get(k, 0.0) + v * len(xb)
                    bar.update(1)
                n = len(train_data.x)
                entry = {"epoch": epoch, "train_loss": loss_sum / n, **evaluate_seq(model, test_data),
                         "seconds": time.perf_counter() - start,
                         "firing_rates": {k: v / n for k, v in rates.items()},
                         "hamming": {k: v / n for k, v in hams.items()}, "alignment": model.weight_alignment()}
                metrics["history"].append(entry)
                metrics.update({k: v for k, v in entry.items() if k.startswith("test_")})
                _save(out / "model.pt", model, cfg, epoch, train_data)
                write_json(out / "metrics.json", metrics)
    return metrics


def load_seq_checkpoint(path):
    """-> (BSDRNN in eval mode, SeqConfig, vocab or None)."""
    path = Path(path)
    ckpt = read_checkpoint(path, SEQ_CHECKPOINT_FORMAT, "snncc sequence")
    try:
        cfg = SeqConfig.from_dict(ckpt["config"]).resolved()
        shape = ckpt["shape"]
        model = BSDRNN(shape["n_in"], shape["n_out"], hidden=cfg.hidden, task=cfg.task, v_th=cfg.v_th,
                       v_th_backward=cfg.v_th_backward, tau=cfg.tau, lam=cfg.lam, interlayer=cfg.interlayer_loss,
                       temperature=cfg.temperature)
        model.load_state_dict(ckpt["state_dict"])
    except (ConfigError, KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not fit its config ({str(exc).splitlines()[0][:160]})") from None
    return model.eval(), cfg, ckpt.get("vocab")

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from snncc.data.sequences import SequenceData, load_sequences
from snncc.training.methods.bsd import INTERLAYER_LOSSES, firing_rates
from snncc.models.rnn import TASKS, BSDRNN
from snncc.training.checkpoint import FORMATS, CheckpointError, read_checkpoint
from snncc.training.config import ConfigError, check_choice, check_float, check_int, check_keys, fill
from snncc.training.evaluation import SequenceScores, evaluate
from snncc.training.loop import (TrainingDiverged, deterministic, epoch_seed, fit, hamming_similarity, make_scheduler,
                                 method_step)
from snncc.training.registry import Method, ModelKind, lookup
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults

SEQ_CHECKPOINT_FORMAT = FORMATS["seq"]


@dataclass
class SeqConfig:
    """A BSD-RNN run. None fields take the recipe's values for ("bsd", "rnn", task)
    (:mod:`snncc.training.recipes`); thresholds of both types are equal (E.2.3)."""

    task: str = "text"
    data_path: str | None = None  # None: the shared tinyshakespeare / exchange_rate file
    seq_len: int = 32
    stride: int | None = None  # window stride; None: seq_len (non-overlapping)
    hidden: int = 300
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None
    train_samples: int | None = None  # number of windows (seeded subset)
    test_samples: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    v_th: float | None = None
    v_th_backward: float | None = None
    tau: float = 2.0
    lam: float = 0.6
    interlayer_loss: str = "reco"
    temperature: float = 0.1
    grad_clip: float | None = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    steps_per_element: int | None = None  # LIF steps per sequence element (paper recipe: 4, E.2.3; cpu: 1)
    seed: int = 0

    def validate(self) -> None:
        check_choice("recipe", self.recipe, RECIPES)
        check_choice("task", self.task, TASKS)
        check_choice("interlayer_loss", self.interlayer_loss, INTERLAYER_LOSSES)
        for name in ("seq_len", "hidden"):
            check_int(name, getattr(self, name), 1)
        for name in ("epochs", "stride", "train_samples", "test_samples", "batch_size", "steps_per_element"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_int("warmup_steps", self.warmup_steps, 0)
        for name in ("lr", "temperature", "v_th", "v_th_backward"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), positive=True)
        for name in ("lam", "weight_decay"):
            check_float(name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, positive=True)
        if not (isinstance(self.tau, (int, float)) and self.tau > 1):
            raise ConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")

    def resolved(self) -> "SeqConfig":
        self.validate()
        filled = fill(self, recipe_defaults(self.recipe, "bsd", "rnn", self.task))
        v_th = filled.get("v_th", self.v_th)
        return replace(self, **filled, v_th_backward=self.v_th_backward if self.v_th_backward is not None else v_th,
                       stride=self.stride or self.seq_len,
                       data_path=None if self.data_path is None else str(self.data_path))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "SeqConfig":
        check_keys(cls, d)
        if "steps_per_element" not in d:  # written before the option existed: one LIF step per element
            d = {**d, "steps_per_element": 1}
        return cls(**d)


def load_data(cfg: SeqConfig, split: str) -> SequenceData:
    limit = cfg.train_samples if split == "train" else cfg.test_samples
    return load_sequences(cfg.task, split, cfg.data_path, seq_len=cfg.seq_len, stride=cfg.stride or cfg.seq_len,
                          limit=limit, seed=cfg.seed)


def build_rnn(cfg: SeqConfig, data: SequenceData) -> BSDRNN:
    cfg = cfg.resolved()
    return BSDRNN(data.input_size, data.output_size, hidden=cfg.hidden, task=cfg.task, v_th=cfg.v_th,
                  v_th_backward=cfg.v_th_backward, tau=cfg.tau, lam=cfg.lam, interlayer=cfg.interlayer_loss,
                  temperature=cfg.temperature, steps_per_element=cfg.steps_per_element)


def _batches(data: SequenceData, batch_size: int, shuffle: bool, seed: int):
    order = np.random.default_rng(seed).permutation(len(data.x)) if shuffle else np.arange(len(data.x))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield torch.from_numpy(data.x[idx]), torch.from_numpy(data.y[idx])


def evaluate_seq(model: BSDRNN, data: SequenceData, batch_size: int = 256) -> dict:
    """Text: {"test_accuracy"} (element-wise, eq. E.2.3); series: {"test_mse", "test_mae"} (eqs. 23-24)."""
    return evaluate(model, _batches(data, batch_size, False, 0), SequenceScores(model.task))


def seq_train_step(model: BSDRNN, optimizer, x, y, grad_clip=1.0):
    return method_step(lookup(Method.BSD, ModelKind.RNN), model, optimizer, x, y, grad_clip)


def train_seq(cfg: SeqConfig, out_dir, progress: bool = True, threads: int | None = None,
              resume: bool = False) -> dict:
    """Train a BSD-RNN; writes out_dir/model.pt and out_dir/metrics.json every epoch; returns the metrics.
    ``resume=True`` continues from out_dir/model.pt (bit-identical to an uninterrupted run).

    Raises ConfigError, SequenceError (missing / malformed data), CheckpointError or TrainingDiverged.
    """
    cfg = cfg.resolved()
    out = Path(out_dir)
    with deterministic(cfg.seed, threads):
        train_data, test_data = load_data(cfg, "train"), load_data(cfg, "test")
        model = build_rnn(cfg, train_data)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * math.ceil(len(train_data.x) / cfg.batch_size)
        scheduler, warm = make_scheduler(optimizer, steps, cfg.warmup_steps)
        metrics = {"history": [], "config": cfg.to_dict(), "recipe": cfg.recipe, "effective_warmup_steps": warm,
                   "train_windows": len(train_data.x), "test_windows": len(test_data.x)}
        with tqdm(total=steps, desc=f"bsd-rnn {cfg.task}", disable=not progress, unit="batch") as bar:
            def run_epoch(epoch):
                start, loss_sum, rates, hams = time.perf_counter(), 0.0, {}, {}
                for step, (xb, yb) in enumerate(_batches(train_data, cfg.batch_size, True,
                                                         epoch_seed(cfg.seed, epoch))):
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
                return {"epoch": epoch, "train_loss": loss_sum / n, **evaluate_seq(model, test_data),
                        "seconds": time.perf_counter() - start,
                        "firing_rates": {k: v / n for k, v in rates.items()},
                        "hamming": {k: v / n for k, v in hams.items()}, "alignment": model.weight_alignment()}

            return fit(out, SEQ_CHECKPOINT_FORMAT, cfg.to_dict(), cfg.seed, cfg.epochs, model, optimizer, scheduler,
                       metrics, run_epoch, lambda e: {k: v for k, v in e.items() if k.startswith("test_")},
                       lambda: {"state_dict": model.state_dict(), "shape": {"n_in": model.n_in, "n_out": model.n_out},
                                "vocab": train_data.vocab}, resume=resume,
                       upgrade=lambda d: SeqConfig.from_dict(d).to_dict())


def load_seq_checkpoint(path):
    """-> (BSDRNN in eval mode, SeqConfig, vocab or None)."""
    path = Path(path)
    ckpt = read_checkpoint(path, SEQ_CHECKPOINT_FORMAT, "snncc sequence")
    try:
        cfg = SeqConfig.from_dict(ckpt["config"]).resolved()
        shape = ckpt["shape"]
        model = BSDRNN(shape["n_in"], shape["n_out"], hidden=cfg.hidden, task=cfg.task, v_th=cfg.v_th,
                       v_th_backward=cfg.v_th_backward, tau=cfg.tau, lam=cfg.lam, interlayer=cfg.interlayer_loss,
                       temperature=cfg.temperature, steps_per_element=cfg.steps_per_element)
        model.load_state_dict(ckpt["state_dict"])
    except (ConfigError, KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not fit its config ({str(exc).splitlines()[0][:160]})") from None
    return model.eval(), cfg, ckpt.get("vocab")

"""The one fit loop and the step machinery every trainer shares.

* :func:`fit` -- epochs, resume, per-epoch atomic checkpoint + metrics.json, divergence messages.
  A trainer hands it ``run_epoch(epoch) -> history entry`` (its own batches, steps and evaluation)
  and the objects whose state is saved; nothing else about the trainer is known here.
* :func:`method_step` / :func:`step_on_losses` -- one update from a training method's dict of losses: finiteness checks that name the
  layer, one backward, gradient checks, clipping per weight layer (local methods: a global norm
  would be a non-local signal) or over the whole model (end-to-end methods), one optimiser step.
* :func:`deterministic`, :func:`epoch_seed` -- reproducibility: the data order and augmentation of
  an epoch are pure functions of (seed, epoch), which is what makes a resumed run bit-identical.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from snncc.fileio import write_json
from snncc.training.checkpoint import CheckpointError, resume_state, restore, write_checkpoint
from snncc.training.config import ConfigError, is_int


class TrainingDiverged(RuntimeError):
    """A loss or gradient became non-finite; ``layer`` names where."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


# ---------------------------------------------------------------- reproducibility
@contextmanager
def deterministic(seed: int, threads: int | None):
    """Deterministic torch kernels, torch's RNG seeded with ``seed`` and ``threads`` CPU threads for the
    block (all restored after)."""
    if threads is not None and not (is_int(threads) and threads >= 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def epoch_seed(seed: int, epoch: int, *salt: int) -> int:
    """The data-order seed of one epoch (``salt`` separates streams of different trainers)."""
    return int(np.random.SeedSequence([seed, epoch, *salt]).generate_state(1)[0])


# ---------------------------------------------------------------- one step
def finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def check_losses(losses: dict, currents: dict) -> None:
    """Raise TrainingDiverged naming the layer whose loss is not finite (none: return)."""
    bad = [name for name, loss in losses.items() if not finite(loss)]
    if not bad:
        return
    # A corrupt layer also spoils the losses that use its current as their target;
    # blame the layer whose own current is non-finite, else the first bad loss.
    culprit = next((n for n in bad if n in currents and not finite(currents[n])), bad[0])
    others = [n for n in bad if n != culprit]
    raise TrainingDiverged(f"loss of {culprit} is not finite"
                           + (f" (also affected: {', '.join(others)})" if others else ""), culprit)


def grad_norms(model) -> list:
    """[(layer name, its gradients, their 2-norm as a 0-dim tensor)] for every weight layer.

    One foreach pass over all gradients; a layer's norm is the norm of its
    tensors' norms (what ``clip_grad_norm_`` computes)."""
    layers = [(name, [p.grad for p in layer.parameters() if p.grad is not None])
              for name, layer in model.named_weight_layers()]
    flat = [g for _, grads in layers for g in grads]
    norms = iter(torch._foreach_norm(flat) if flat else [])
    out = []
    for name, grads in layers:
        own = [next(norms) for _ in grads]
        norm = torch.linalg.vector_norm(torch.stack(own)) if own else None
        out.append((name, grads, norm))
    return out


def check_grads(norms) -> None:
    # BPTT can hide a NaN weight from its loss (NaN currents never cross the
    # threshold, so spikes stay binary) but not from the surrogate gradient.
    # A NaN or inf element makes its layer's norm non-finite; only then are the
    # elements themselves checked (a finite layer may still overflow the norm).
    for name, grads, norm in norms:
        if norm is not None and not finite(norm) and not all(finite(g) for g in grads):
            raise TrainingDiverged(f"gradient of {name} is not finite", name)


def clip(model, max_norm, norms=None) -> None:
    """Scale gradients to norm <= ``max_norm``: per weight layer when ``model.local_clipping``
    (a global norm would be a non-local signal), else over the whole model. Same scale
    factor as ``torch.nn.utils.clip_grad_norm_``, max_norm / (norm + 1e-6) capped at 1;
    layers already within the bound are left untouched (their factor is exactly 1)."""
    if max_norm is None:
        return
    norms = [n for n in (norms if norms is not None else grad_norms(model)) if n[2] is not None]
    if not norms:
        return
    if model.local_clipping:
        groups = [(grads, norm) for _, grads, norm in norms]
    else:
        groups = [([g for _, grads, _ in norms for g in grads],
                   torch.linalg.vector_norm(torch.stack([norm for _, _, norm in norms])))]
    coefs = (max_norm / (torch.stack([norm for _, norm in groups]) + 1e-6)).clamp(max=1.0)
    for (grads, _), coef, value in zip(groups, coefs, coefs.tolist()):
        if value < 1.0:
            torch._foreach_mul_(grads, coef)


def step_on_losses(model, optimizer, losses: dict, currents: dict, grad_clip) -> float:
    """Check the local losses, one backward of their sum, check and clip the gradients, one step.
    Returns the summed loss; raises TrainingDiverged before touching the weights."""
    stacked = torch.stack(list(losses.values()))
    if not finite(stacked):
        check_losses(losses, currents)
    total = stacked.sum()
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    norms = grad_norms(model)
    check_grads(norms)
    clip(model, grad_clip, norms)
    optimizer.step()
    return float(total.detach())


def method_step(method, model, optimizer, x, y, grad_clip):
    """One training step of ``method`` (a :class:`~snncc.training.methods.base.TrainingMethod`):
    its losses on the batch, then :func:`step_on_losses` -> (summed loss, info). Shared by every
    trainer whose steps are a sum of losses (image models, the RNN, the autoencoder)."""
    model.train()
    losses, info = method.losses(model, x, y)
    return step_on_losses(model, optimizer, losses, info["currents"], grad_clip), info


def make_optimizer(model, lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW over all parameters, one group; the fused single-kernel update on CPU/CUDA
    (same algorithm as the default per-tensor loop, several times faster on CPU)."""
    params = list(model.parameters())
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


SCHEDULES = ("cosine", "constant")


def make_scheduler(optimizer, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine"):
    """Cosine annealing (or a constant rate) over ``total_steps``, after ``warmup_steps`` of linear warm-up.

    The warm-up is capped at a fifth of the run; cosine without warm-up is exactly
    torch's CosineAnnealingLR. Returns (scheduler, effective warm-up).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    total = max(int(total_steps), 1)
    warm = min(int(warmup_steps), total // 5)
    if warm == 0 and schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), 0

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), warm


# ---------------------------------------------------------------- metrics helpers
def hamming_similarity(spikes: dict) -> dict:
    """Fig. 3c: {"layer i": fraction of equal entries of s_i and s'_i} for every layer with both."""
    out = {}
    for name, sb in spikes.items():
        if name.startswith("s'") and f"s{name[2:]}" in spikes:
            s = spikes[f"s{name[2:]}"]
            if s.shape == sb.shape:
                out[f"layer {name[2:]}"] = float((s.detach() == sb.detach()).float().mean())
    return out


# ---------------------------------------------------------------- the loop
def fit(out, fmt: str, config: dict, seed: int, epochs: int, model, optimizer, scheduler, metrics: dict,
        run_epoch: Callable[[int], dict], summarize: Callable[[dict], dict],
        checkpoint: Callable[[], dict], resume: bool = False, after_epoch: Callable | None = None,
        main: bool = True, barrier: Callable | None = None, error=CheckpointError,
        upgrade: Callable | None = None) -> dict:
    """Run epochs 1..``epochs`` (from the last checkpoint's next epoch with ``resume``).

    ``run_epoch(epoch)`` trains one epoch and returns its history entry (TrainingDiverged raised
    inside gets the epoch's checkpoint status appended); ``summarize(entry)`` the top-level metric
    updates; ``checkpoint()`` the deployable part of the checkpoint ({"state_dict": ..., extras}).
    After every epoch ``out/model.pt`` (with the training state of ``model``, ``optimizer``,
    ``scheduler`` and torch's RNG) and ``out/metrics.json`` are rewritten atomically (by ``main`` only).
    ``upgrade`` (see :func:`~snncc.training.checkpoint.restore`) reads a resumed checkpoint's config as today's.
    """
    out = Path(out)
    path = out / "model.pt"
    start = 1
    if resume and path.is_file():
        done, saved = restore(path, fmt, config, model, optimizer, scheduler, error, upgrade)
        metrics.clear()
        metrics.update(saved)
        metrics["resumed_from_epoch"] = done
        start = done + 1
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        try:
            entry = run_epoch(epoch)
        except TrainingDiverged as exc:
            kept = f"last good checkpoint: {path} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint written"
            raise TrainingDiverged(f"training diverged at {exc}; {kept}", exc.layer) from None
        entry.setdefault("seconds", time.perf_counter() - t0)
        metrics["history"].append(entry)
        metrics.update(summarize(entry))
        if main:
            state = resume_state(model, optimizer, scheduler, seed, epoch, metrics)
            write_checkpoint(path, fmt, config, epoch=epoch, resume=state, **checkpoint())
            write_json(out / "metrics.json", metrics)
            if after_epoch is not None:
                after_epoch(epoch, entry)
        if barrier is not None:
            barrier()
    return metrics

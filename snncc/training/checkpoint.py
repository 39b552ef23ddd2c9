"""The one checkpoint layout every trainer writes, read back with ``weights_only=True``.

A checkpoint is a dict of plain values and tensors::

    {"format": FORMATS[kind], "config": resolved config dict, "epoch": completed epochs,
     "state_dict": the deployable model's weights, **extra (per trainer: vocab, aux heads, ...),
     "resume": {"model": full training state, "optimizer": ..., "scheduler": ..., "rng": {"torch": ...},
                "data_order": {"seed": ..., "next_epoch": ...}, "metrics": metrics so far}}

written atomically (temporary sibling + rename) after every epoch, so a killed run leaves the
last completed epoch and ``--resume`` continues from it bit for bit: data order and augmentation
are pure functions of (seed, epoch), and everything stateful (weights, optimiser moments,
scheduler position, torch's global RNG) is in ``resume``. The ``format`` string names the
trainer kind (what ``config`` is) and is checked on load.
"""
from __future__ import annotations

from pathlib import Path

import torch

from snncc.fileio import atomic_path

FORMATS = {"image": "snncc-checkpoint/1", "seq": "snncc-seq-checkpoint/1", "ae": "snncc-ae-checkpoint/1",
           "mskd": "snncc-mskd-checkpoint/1"}
# config keys that may differ between a run and its resumption (more epochs continue a finished run)
RESUMABLE_CHANGES = ("epochs",)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not match its config."""


def _detached(state: dict) -> dict:
    # no copies: the file is written before the tensors change, and tensors shared between the model
    # state and the training state (same storage) are stored once
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def write_checkpoint(path, fmt: str, config: dict, state_dict: dict, epoch: int, **extra) -> None:
    """Atomically write a checkpoint of plain values and tensors (loadable with ``weights_only=True``)."""
    payload = {"format": fmt, "config": config, "epoch": epoch, "state_dict": _detached(state_dict), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def safe_load(path, error=CheckpointError, what: str = "checkpoint", missing=None):
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises
    ``error`` (``missing`` for a missing one, default ``error``) with one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise (missing or error)(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, forbidden pickle globals...
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise error(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {detail})") from None


def read_checkpoint(path, fmt: str, kind: str = "snncc", error=CheckpointError) -> dict:
    """A checkpoint dict whose ``format`` is ``fmt``, or ``error`` naming what was found."""
    ckpt = safe_load(path, error)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise error(f"{path}: not an {kind} checkpoint (format {found!r}, expected {fmt!r})")
    return ckpt


def fit_state(model, state, path, error=CheckpointError) -> None:
    """Load ``state`` into ``model`` after checking keys and shapes (one-line ``error`` otherwise)."""
    if not isinstance(state, dict):
        raise error(f"{path}: 'state_dict' is missing or not a dict")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise error(f"{path}: state dict does not fit its config (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, ref in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != ref.shape:
            got = getattr(state[key], "shape", type(state[key]).__name__)
            raise error(f"{path}: state dict does not fit its config ({key}: {tuple(got)} vs {tuple(ref.shape)})")
    model.load_state_dict(state)


# ---------------------------------------------------------------- resume state
def resume_state(model, optimizer, scheduler, seed: int, epoch: int, metrics: dict) -> dict:
    """Everything a killed run needs to continue bit for bit after ``epoch`` completed epochs."""
    return {"model": _detached(model.state_dict()), "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "data_order": {"seed": int(seed), "next_epoch": int(epoch) + 1}, "metrics": metrics}


def config_changes(old: dict, new: dict) -> list:
    """Config keys (other than RESUMABLE_CHANGES) whose values differ between two runs."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]


def restore(path, fmt: str, config: dict, model, optimizer, scheduler, error=CheckpointError, upgrade=None) -> tuple:
    """Load the training state of the checkpoint at ``path`` into model / optimiser / scheduler and
    torch's RNG -> (completed epochs, metrics so far). Refuses a checkpoint of another run (config
    differs in anything but the epoch count) or one without training state. ``upgrade`` maps a stored
    config dict to today's fields (the config class's ``from_dict`` then ``to_dict``), so a run written
    before a field existed resumes when the field's recorded meaning equals the new run's."""
    path = Path(path)
    ckpt = read_checkpoint(path, fmt, error=error)
    old = ckpt.get("config")
    if not isinstance(old, dict):
        raise error(f"{path}: bad config in checkpoint")
    if upgrade is not None:
        try:
            old = upgrade(old)
        except (ValueError, TypeError) as exc:
            raise error(f"{path}: bad config in checkpoint ({str(exc).splitlines()[0][:160]})") from None
    diff = config_changes(old, config)
    if diff:
        raise error(f"{path}: cannot resume, config differs in {', '.join(diff)}")
    state = ckpt.get("resume")
    if not isinstance(state, dict) or not {"model", "optimizer", "rng", "data_order", "metrics"} <= set(state):
        raise error(f"{path}: cannot resume, the checkpoint has no training state (written before --resume "
                    f"existed, or by another tool)")
    fit_state(model, state["model"], path, error)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        epoch = int(ckpt["epoch"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise error(f"{path}: cannot resume, training state does not fit ({detail})") from None
    if state["data_order"].get("next_epoch") != epoch + 1:
        raise error(f"{path}: cannot resume, inconsistent epoch counters")
    return epoch, state["metrics"]

"""What every trainer's config shares: the error type, the value checks and plain-value conversion.

Each trainer's config (``TrainConfig`` for the BSD / BPTT / ANN image models, ``SeqConfig`` for the
BSD-RNN, ``AEConfig`` for the autoencoder, ``MSKDConfig`` for the ResNets) is a dataclass whose
fields are plain python values, so it is stored in checkpoints as a dict and loads with
``weights_only=True``. Fields a recipe governs (lr, epochs, batch size, thresholds, ...) are None
until ``resolved()`` fills them from :mod:`snncc.training.recipes`. ``tau`` always means the
membrane time constant; the KD temperature is ``kd_temperature``.
"""
from __future__ import annotations

import math
from dataclasses import fields

import numpy as np


class ConfigError(ValueError):
    """A training configuration value is invalid (one-line message)."""


def is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def plain(value):
    """numpy scalars -> python scalars (they would need pickle globals to load)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_choice(name, value, choices, error=None) -> None:
    if value not in choices:
        raise (error or ConfigError)(f"unknown {name} {value!r} (choose from {', '.join(choices)})")


def check_int(name, value, minimum, error=None, maximum=None) -> None:
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise (error or ConfigError)(f"{name} must be an integer {bound}, got {value!r}")


def check_float(name, value, positive, error=None) -> None:
    # `not x > 0` also rejects NaN
    if not is_number(value) or not math.isfinite(value) or not (value > 0 if positive else value >= 0):
        raise (error or ConfigError)(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                     f"got {value!r}")


def check_run(cfg, error=None) -> None:
    """The run-size fields every image trainer's config has: epochs, timesteps and batch_size
    >= 1 (or None: a recipe fills them), seed >= 0, train_samples / test_samples None or >= 1."""
    for name in ("epochs", "timesteps", "batch_size"):
        if getattr(cfg, name, None) is not None:
            check_int(name, getattr(cfg, name), 1, error)
    check_int("seed", cfg.seed, 0, error)
    for name in ("train_samples", "test_samples"):
        if getattr(cfg, name) is not None:
            check_int(name, getattr(cfg, name), 1, error)


def check_keys(cls, d, error=None) -> None:
    """A config dict read back from a checkpoint: a dict with only ``cls``'s field names."""
    if not isinstance(d, dict):
        raise (error or ConfigError)(f"config must be a dict, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise (error or ConfigError)(f"unknown config key(s): {', '.join(map(str, unknown))}")


def fill(cfg, defaults: dict) -> dict:
    """{field: recipe value} for each of ``cfg``'s fields that is None and the recipe gives."""
    return {k: v for k, v in defaults.items() if hasattr(cfg, k) and getattr(cfg, k) is None}

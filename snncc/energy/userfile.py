"""An energy model from a user file of constants (TOML or JSON), for any chip.

    base = "loihi"                 # whose equations: kundu, lemaire or loihi
    name = "my-chip"               # label in reports (default: the file name)
    [constants.E_SYNOP]            # any of the base model's constants; the rest keep their defaults
    pj = 12.7
    source = "Frenkel et al., TBioCAS 2019 (ODIN, 28 nm)"
    grade = "measured silicon"

JSON: the same structure as one object. Every error is one line naming the file and the field.
"""
from __future__ import annotations

import json
import math
import os
import tomllib

from snncc.energy.base import Constant, EnergyModelError

_TOP = ("base", "name", "constants")
_FIELDS = ("pj", "source", "grade")


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise EnergyModelError(f"energy model file {path}: cannot read ({e.strerror})") from None
    try:
        if path.endswith(".json"):
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        kind = "JSON" if path.endswith(".json") else "TOML"
        raise EnergyModelError(f"energy model file {path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise EnergyModelError(f"energy model file {path}: expected a table/object at the top level")
    return data


def _constant(path: str, key: str, entry) -> Constant:
    where = f"energy model file {path}: constants.{key}"
    if not isinstance(entry, dict):
        raise EnergyModelError(f"{where}: expected a table with {', '.join(_FIELDS)}")
    extra = sorted(set(entry) - set(_FIELDS))
    missing = [f for f in _FIELDS if f not in entry]
    if extra or missing:
        raise EnergyModelError(f"{where}: " + (f"unknown field {extra[0]!r}" if extra else f"missing {missing[0]!r}")
                               + f" (fields: {', '.join(_FIELDS)})")
    pj = entry["pj"]
    if isinstance(pj, bool) or not isinstance(pj, (int, float)) or not math.isfinite(pj) or pj < 0:
        raise EnergyModelError(f"{where}.pj: expected a finite non-negative number of pJ, got {pj!r}")
    for f in ("source", "grade"):
        if not isinstance(entry[f], str) or not entry[f].strip():
            raise EnergyModelError(f"{where}.{f}: expected a non-empty string (where the value comes from / "
                                   f"how solid it is)")
    return Constant(float(pj), entry["source"].strip(), f"{entry['grade'].strip()} (user file)")


def load_model_file(path: str, models: dict):
    """The model ``base`` of ``models`` with the file's constants."""
    data = _read(path)
    extra = sorted(set(data) - set(_TOP))
    if extra:
        raise EnergyModelError(f"energy model file {path}: unknown key {extra[0]!r} (keys: {', '.join(_TOP)})")
    base = data.get("base")
    if base not in models:
        raise EnergyModelError(f"energy model file {path}: base must be one of {', '.join(models)}, got {base!r}")
    cls = models[base]
    constants = data.get("constants", {})
    if not isinstance(constants, dict):
        raise EnergyModelError(f"energy model file {path}: constants must be a table")
    for key in constants:
        if key not in cls.DEFAULTS:
            raise EnergyModelError(f"energy model file {path}: constants.{key}: not a constant of {base} "
                                   f"(choose from {', '.join(cls.DEFAULTS)})")
    name = data.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name.strip():
        raise EnergyModelError(f"energy model file {path}: name must be a non-empty string")
    parsed = {k: _constant(path, k, v) for k, v in constants.items()}
    return cls(constants=parsed, label=f"{name.strip()} ({base} equations)")

"""Energy per inference from measured activity.

Two steps, kept apart so that a new energy model is one module:

1. :mod:`snncc.energy.counts` turns a graph and the activity a backend measured into per-layer
   operation counts (:class:`LayerCounts`): dense FLOPs, accumulates (SOPs) for spike-driven
   synapses, MACs for analog-driven ones, events, spikes, geometry. Independent of any hardware.
2. An :class:`EnergyModel` (one module each: :mod:`snncc.energy.kundu` compute only,
   :mod:`snncc.energy.lemaire` operations + memory + addressing, :mod:`snncc.energy.loihi` per-op
   chip energies with a core placement; :mod:`snncc.energy.userfile` any of them with a file of
   constants) prices those counts, for the SNN and for the same architecture run as an ANN, and
   returns a typed :class:`EnergyReport` (with break-even rates, :mod:`snncc.energy.breakeven`) that
   the tables (:mod:`snncc.report`), figures (:mod:`snncc.plots`) and JSON output read.

Adding an energy model: write a module with a subclass of :class:`EnergyModel` (``DEFAULTS``: its
constants with sources and grades; ``layer_energy`` and ``ann_layer_energy`` returning a breakdown in
pJ) and list it in :data:`MODELS`.
"""
import os

from snncc.energy.base import (CATEGORIES, Constant, EnergyModel, EnergyModelError, EnergyReport, LayerEnergy,
                               energy_report, price_counts)
from snncc.energy.counts import FIRST_LAYER, GRADED, LayerCounts, count_layers
from snncc.energy.kundu import PRESETS as KUNDU_PRESETS
from snncc.energy.kundu import Kundu
from snncc.energy.lemaire import Lemaire
from snncc.energy.loihi import Loihi
from snncc.energy.userfile import load_model_file

MODELS = {"kundu": Kundu, "lemaire": Lemaire, "loihi": Loihi}


def get_model(name: str) -> EnergyModel:
    """An energy model by name: a registered model (its default constants), ``kundu:PRESET``, or
    a TOML/JSON file of constants (a name ending in .toml/.json, or an existing file)."""
    base, _, preset = name.partition(":")
    if base not in MODELS:
        if name.endswith((".toml", ".json")) or os.path.isfile(name):
            return load_model_file(name, MODELS)
        raise EnergyModelError(f"unknown energy model {name!r} (choose from {', '.join(MODELS)}, "
                               f"or a .toml/.json file of constants)")
    if preset and not hasattr(MODELS[base], "preset"):
        raise EnergyModelError(f"unknown {base} preset {preset!r} ({base} has no presets)")
    return MODELS[base].preset(preset) if preset else MODELS[base]()


__all__ = ["CATEGORIES", "Constant", "EnergyModel", "EnergyModelError", "EnergyReport", "LayerEnergy",
           "LayerCounts", "Kundu", "KUNDU_PRESETS", "Lemaire", "Loihi", "MODELS", "FIRST_LAYER", "GRADED",
           "count_layers", "energy_report", "get_model", "load_model_file", "price_counts"]

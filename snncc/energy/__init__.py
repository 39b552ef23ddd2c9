"""Energy per inference from measured activity.

Two steps, kept apart so that a new energy model is one module:

1. :mod:`snncc.energy.counts` turns a graph and the activity a backend measured into per-layer
   operation counts (:class:`LayerCounts`): dense FLOPs, accumulates (SOPs) for spike-driven
   synapses, MACs for analog-driven ones, firing rates. Independent of any hardware.
2. An :class:`EnergyModel` (one module each: :mod:`snncc.energy.kundu`, ...) prices those counts,
   for the SNN and for the same architecture run as an ANN, and returns a typed
   :class:`EnergyReport` that the tables (:mod:`snncc.report`), figures (:mod:`snncc.plots`) and JSON
   output read.

Adding an energy model: write a module with a subclass of :class:`EnergyModel` (``layer_energy`` and
``ann_layer_energy`` returning a breakdown in pJ) and list it in :data:`MODELS`.
"""
from snncc.energy.base import EnergyModel, EnergyReport, LayerEnergy, energy_report
from snncc.energy.counts import FIRST_LAYER, LayerCounts, count_layers
from snncc.energy.kundu import PRESETS as KUNDU_PRESETS
from snncc.energy.kundu import Kundu

MODELS = {"kundu": Kundu}


def get_model(name: str) -> EnergyModel:
    """An energy model by name: a registered model (its default constants) or ``kundu:PRESET``."""
    base, _, preset = name.partition(":")
    if base not in MODELS:
        raise ValueError(f"unknown energy model {name!r} (choose from {', '.join(MODELS)})")
    return MODELS[base].preset(preset) if preset else MODELS[base]()


__all__ = ["EnergyModel", "EnergyReport", "LayerEnergy", "LayerCounts", "Kundu", "KUNDU_PRESETS", "MODELS",
           "FIRST_LAYER", "count_layers", "energy_report", "get_model"]

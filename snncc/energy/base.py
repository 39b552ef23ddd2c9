"""The energy-model interface and the typed report every model returns."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from snncc.energy.breakeven import breakeven_rates
from snncc.energy.counts import LayerCounts, count_layers, mean_firing_rate
from snncc.ir.graph import SpikeGraph

CATEGORIES = ("compute", "memory", "addressing", "neuron updates", "routing")


class EnergyModelError(ValueError):
    """A bad energy-model name, preset, constant or constants file (one line)."""


@dataclass(frozen=True)
class Constant:
    """One energy constant with where it comes from and how solid that is."""

    value_pj: float
    source: str
    grade: str  # e.g. "circuit estimate [verified]", "pre-silicon [secondary source]", "user file"


class EnergyModel(ABC):
    """Prices :class:`LayerCounts`. ``layer_energy`` / ``ann_layer_energy`` return a breakdown
    {category: pJ per inference} over :data:`CATEGORIES`; the layer's energy is its sum.

    A model's constants are its class's ``DEFAULTS`` (each with source and grade), any of which a
    constructor argument (a user file) may replace. A model whose energy depends on the network as a
    whole (Loihi's placement) overrides :meth:`price`."""

    name: str = ""
    DEFAULTS: dict = {}

    def __init__(self, constants: dict | None = None, label: str | None = None):
        constants = dict(constants or {})
        unknown = sorted(set(constants) - set(self.DEFAULTS))
        if unknown:
            raise EnergyModelError(f"{self.name}: unknown constant {unknown[0]!r} "
                                   f"(choose from {', '.join(self.DEFAULTS)})")
        for key, c in constants.items():
            if not (isinstance(c.value_pj, (int, float)) and not isinstance(c.value_pj, bool)
                    and math.isfinite(c.value_pj) and c.value_pj >= 0):
                raise EnergyModelError(f"{self.name}: {key} must be a finite non-negative energy in pJ, "
                                       f"got {c.value_pj!r}")
        self._constants = {**self.DEFAULTS, **constants}
        self.label = label or self.name

    def constants(self) -> dict[str, Constant]:
        """Every constant the model uses, by name."""
        return dict(self._constants)

    def e(self, key: str) -> float:
        return float(self._constants[key].value_pj)

    @abstractmethod
    def layer_energy(self, c: LayerCounts) -> dict[str, float]:
        """The SNN layer's energy per inference, by category."""

    @abstractmethod
    def ann_layer_energy(self, c: LayerCounts) -> dict[str, float]:
        """The same layer run as an ANN (every synapse evaluated densely once), by category,
        with the same memory accounting as the SNN side."""

    def price(self, counts: list[LayerCounts]) -> list[tuple[dict, dict]]:
        """(SNN breakdown, ANN breakdown) for every layer of one network."""
        return [(self.layer_energy(c), self.ann_layer_energy(c)) for c in counts]

    def notes(self) -> dict:
        """Model-specific facts a report must state (e.g. a placement), by name."""
        return {}

    def describe(self) -> str:
        return "; ".join(f"{k}={v.value_pj:g} pJ ({v.source})" for k, v in self.constants().items())


@dataclass
class LayerEnergy:
    counts: LayerCounts
    breakdown: dict
    ann_breakdown: dict
    breakeven_rate: float | None = None   # spikes per neuron per step where SNN = ANN energy (None: n/a)

    @property
    def energy_pj(self) -> float:
        return float(sum(self.breakdown.values()))

    @property
    def ann_energy_pj(self) -> float:
        return float(sum(self.ann_breakdown.values()))

    def as_dict(self) -> dict:
        return {**self.counts.as_dict(), "energy_pj": self.energy_pj, "breakdown": dict(self.breakdown),
                "ann_energy_pj": self.ann_energy_pj, "ann_breakdown": dict(self.ann_breakdown),
                "breakeven_rate": self.breakeven_rate}


def _sum_breakdowns(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


@dataclass
class EnergyReport:
    """Per-layer and total energy per inference under one model, and the same ANN's under that model.
    ``accuracy``, ``model_path``, ``name`` and ``fully_spiking`` are filled in by callers that know them."""

    model: str
    constants: dict
    conventions: dict
    layers: list
    mean_firing_rate: float | None
    breakeven_rate: float | None = None   # the network's, every spike rate set to one value
    accuracy: float | None = None
    model_path: str | None = None
    name: str | None = None
    fully_spiking: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def total_sops(self) -> float:
        return float(sum(r.counts.sops for r in self.layers))

    @property
    def total_macs(self) -> float:
        return float(sum(r.counts.macs for r in self.layers))

    @property
    def total_energy_pj(self) -> float:
        return float(sum(r.energy_pj for r in self.layers))

    @property
    def ann_energy_pj(self) -> float:
        return float(sum(r.ann_energy_pj for r in self.layers))

    @property
    def ann_over_snn(self) -> float | None:
        total = self.total_energy_pj
        return self.ann_energy_pj / total if total else None

    def breakdown(self) -> dict:
        return _sum_breakdowns(r.breakdown for r in self.layers)

    def ann_breakdown(self) -> dict:
        return _sum_breakdowns(r.ann_breakdown for r in self.layers)

    def as_dict(self) -> dict:
        d = {"energy_model": self.model, "constants": self.constants, "conventions": self.conventions,
             "layers": [r.as_dict() for r in self.layers], "total_sops": self.total_sops,
             "total_macs": self.total_macs, "total_energy_pj": self.total_energy_pj,
             "breakdown": self.breakdown(), "ann_energy_pj": self.ann_energy_pj,
             "ann_breakdown": self.ann_breakdown(), "ann_over_snn": self.ann_over_snn,
             "mean_firing_rate": self.mean_firing_rate, "breakeven_rate": self.breakeven_rate}
        for k in ("accuracy", "name", "fully_spiking"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.model_path is not None:
            d["model"] = self.model_path
        return d


def price_counts(counts: list[LayerCounts], model: EnergyModel, conventions: dict,
                 mean_rate: float | None = None) -> EnergyReport:
    """An :class:`EnergyReport` for ``counts`` (measured, or built by hand) under ``model``,
    with per-layer and network break-even rates."""
    priced = model.price(counts)
    per_layer, network = breakeven_rates(model, counts, [ann for _, ann in priced])
    layers = [LayerEnergy(c, snn, ann, be) for c, (snn, ann), be in zip(counts, priced, per_layer)]
    consts = {k: {"pj": v.value_pj, "source": v.source, "grade": v.grade} for k, v in model.constants().items()}
    return EnergyReport(model=model.label, constants=consts, conventions=conventions, layers=layers,
                        mean_firing_rate=mean_rate, breakeven_rate=network, extra=model.notes())


def energy_report(graph: SpikeGraph, activity: dict, samples: int, timesteps: int,
                  model: EnergyModel | None = None, first_layer: str = "once",
                  graded: str = "events") -> EnergyReport:
    """Count ``graph``'s operations from measured ``activity`` and price them under ``model``
    (default: Kundu's fp32 45 nm constants)."""
    if model is None:
        from snncc.energy.kundu import Kundu
        model = Kundu()
    counts = count_layers(graph, activity, samples, timesteps, first_layer, graded)
    conventions = {"timesteps": timesteps, "samples": samples, "first_layer": first_layer, "graded": graded,
                   "per": "inference (one sample, all T steps)"}
    return price_counts(counts, model, conventions, mean_firing_rate(graph, activity, samples, timesteps))

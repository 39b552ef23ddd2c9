"""The energy-model interface and the typed report every model returns."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from snncc.energy.counts import LayerCounts, count_layers, mean_firing_rate
from snncc.ir.graph import SpikeGraph


@dataclass(frozen=True)
class Constant:
    """One energy constant with where it comes from and how solid that is."""

    value_pj: float
    source: str
    grade: str  # e.g. "measured silicon", "circuit estimate", "user file"


class EnergyModel(ABC):
    """Prices :class:`LayerCounts`. ``layer_energy`` / ``ann_layer_energy`` return a breakdown
    {category: pJ per inference} (categories such as compute, memory, addressing, neuron updates,
    routing); the layer's energy is its sum."""

    name: str = ""

    @abstractmethod
    def constants(self) -> dict[str, Constant]:
        """Every constant the model uses, by name."""

    @abstractmethod
    def layer_energy(self, c: LayerCounts) -> dict[str, float]:
        """The SNN layer's energy per inference, by category."""

    @abstractmethod
    def ann_layer_energy(self, c: LayerCounts) -> dict[str, float]:
        """The same layer run as an ANN (every synapse evaluated densely once), by category."""

    def describe(self) -> str:
        return "; ".join(f"{k}={v.value_pj:g} pJ ({v.source})" for k, v in self.constants().items())


@dataclass
class LayerEnergy:
    counts: LayerCounts
    breakdown: dict
    ann_breakdown: dict

    @property
    def energy_pj(self) -> float:
        return float(sum(self.breakdown.values()))

    @property
    def ann_energy_pj(self) -> float:
        return float(sum(self.ann_breakdown.values()))

    def as_dict(self) -> dict:
        return {**self.counts.as_dict(), "energy_pj": self.energy_pj, "breakdown": dict(self.breakdown),
                "ann_energy_pj": self.ann_energy_pj}


@dataclass
class EnergyReport:
    """Per-layer and total energy per inference under one model, and the same ANN's under that model.
    ``accuracy``, ``model_path``, ``name`` and ``fully_spiking`` are filled in by callers that know them."""

    model: str
    constants: dict
    conventions: dict
    layers: list
    mean_firing_rate: float | None
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
        out: dict = {}
        for r in self.layers:
            for k, v in r.breakdown.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def as_dict(self) -> dict:
        d = {"energy_model": self.model, "constants": self.constants, "conventions": self.conventions,
             "layers": [r.as_dict() for r in self.layers], "total_sops": self.total_sops,
             "total_macs": self.total_macs, "total_energy_pj": self.total_energy_pj,
             "breakdown": self.breakdown(), "ann_energy_pj": self.ann_energy_pj,
             "ann_over_snn": self.ann_over_snn, "mean_firing_rate": self.mean_firing_rate}
        for k in ("accuracy", "name", "fully_spiking"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.model_path is not None:
            d["model"] = self.model_path
        return d


def energy_report(graph: SpikeGraph, activity: dict, samples: int, timesteps: int,
                  model: EnergyModel | None = None, first_layer: str = "once") -> EnergyReport:
    """Count ``graph``'s operations from measured ``activity`` and price them under ``model``
    (default: Kundu's fp32 45 nm constants)."""
    if model is None:
        from snncc.energy.kundu import Kundu
        model = Kundu()
    counts = count_layers(graph, activity, samples, timesteps, first_layer)
    layers = [LayerEnergy(c, model.layer_energy(c), model.ann_layer_energy(c)) for c in counts]
    return EnergyReport(model=model.name, constants={k: {"pj": v.value_pj, "source": v.source, "grade": v.grade}
                                                     for k, v in model.constants().items()},
                        conventions={"timesteps": timesteps, "samples": samples, "first_layer": first_layer,
                                     "per": "inference (one sample, all T steps)"},
                        layers=layers, mean_firing_rate=mean_firing_rate(graph, activity, samples, timesteps))

"""Loihi (Davies et al., IEEE Micro 38(1), 2018, Table 2; 14 nm, 0.75 V): per-operation energies.

Per layer and inference:
  compute         (SOPs + MACs) * E_SYNOP       (a dense input value is delivered as a graded spike)
  neuron updates  (N*T - theta_out) * E_UPD_INACTIVE + theta_out * E_UPD_ACTIVE
                  (an update is counted active in a step where the neuron fires: a lower bound)
  routing         theta_in * sum over destination cores d of (E_SPIKE + dx*E_HOP_EW + dy*E_HOP_NS),
                  averaged over the source population's cores (inputs from the host: not charged)
The ANN on the same chip: FLOPs synaptic ops, N active updates, one message per presynaptic neuron
(none from the host input).

Placement rule (stated in every report): every node a synapse reads (the input included) and every
population, in depth order, fills whole cores of CORE_NEURONS neurons, a new population starting on a new core;
cores sit row-major on a mesh MESH_WIDTH cores wide, one router each; a spike is sent once to every
core holding part of the destination population (exact for dense layers, an upper bound for conv).
"""
from __future__ import annotations

import math

from snncc.energy.base import Constant, EnergyModel
from snncc.energy.counts import LayerCounts

CORE_NEURONS = 1024   # compartments per Loihi core (Davies 2018)
MESH_WIDTH = 8        # cores per mesh row: an assumption, not Loihi's floorplan
_DAVIES = "Davies et al., IEEE Micro 2018, Table 2 (14 nm)"
_PRE = "pre-silicon simulation [secondary source]"


class Loihi(EnergyModel):
    name = "loihi"
    DEFAULTS = {
        "E_SYNOP": Constant(23.6, f"{_DAVIES}, synaptic spike op (minimum)", _PRE),
        "E_UPD_ACTIVE": Constant(81.0, f"{_DAVIES}, neuron update, active", _PRE),
        "E_UPD_INACTIVE": Constant(52.0, f"{_DAVIES}, neuron update, inactive", _PRE),
        "E_SPIKE": Constant(1.7, f"{_DAVIES}, within-tile spike energy", _PRE),
        "E_HOP_EW": Constant(3.0, f"{_DAVIES}, energy per tile hop, east-west", _PRE),
        "E_HOP_NS": Constant(4.0, f"{_DAVIES}, energy per tile hop, north-south", _PRE),
    }

    def __init__(self, constants: dict | None = None, label: str | None = None):
        super().__init__(constants, label)
        self.placement: dict[str, list[tuple[int, int]]] = {}   # node -> [(core, neurons on it)]

    def place(self, counts: list[LayerCounts]) -> dict:
        """Cores of every event source and population, by the placement rule above."""
        placement, next_core = {}, 0
        for c in counts:
            for node, size in ((c.source, c.in_size), (c.population, c.neurons)):
                if node and node not in placement:
                    cores = max(1, math.ceil(size / CORE_NEURONS))
                    placement[node] = [(next_core + i, min(CORE_NEURONS, size - i * CORE_NEURONS))
                                       for i in range(cores)]
                    next_core += cores
        return placement

    def route_pj(self, src: str, dst: str) -> float:
        """Energy to deliver one spike from a neuron of ``src`` to every core of ``dst``."""
        src_cores, dst_cores = self.placement[src], self.placement[dst]
        total = sum(n for _, n in src_cores)
        cost = 0.0
        for s, n in src_cores:
            for d, _ in dst_cores:
                dx = abs(s % MESH_WIDTH - d % MESH_WIDTH)
                dy = abs(s // MESH_WIDTH - d // MESH_WIDTH)
                cost += n / total * (self.e("E_SPIKE") + dx * self.e("E_HOP_EW") + dy * self.e("E_HOP_NS"))
        return cost

    def notes(self) -> dict:
        cores = "; ".join(f"{node}: core{'s' if len(cs) > 1 else ''} {cs[0][0]}"
                          + (f"-{cs[-1][0]}" if len(cs) > 1 else "") for node, cs in self.placement.items())
        return {"placement": f"{cores} ({CORE_NEURONS} neurons per core, mesh {MESH_WIDTH} cores wide, "
                             f"row-major)"}

    def price(self, counts: list[LayerCounts]) -> list[tuple[dict, dict]]:
        self.placement = self.place(counts)
        return super().price(counts)

    def layer_energy(self, c: LayerCounts) -> dict:
        out = {"compute": (c.sops + c.macs) * self.e("E_SYNOP")}
        if c.population:
            n_upd = c.neurons * c.timesteps
            out["neuron updates"] = ((n_upd - c.out_spikes) * self.e("E_UPD_INACTIVE")
                                     + c.out_spikes * self.e("E_UPD_ACTIVE"))
            if c.event_driven:
                out["routing"] = c.in_events * self.route_pj(c.source, c.population)
        return out

    def ann_layer_energy(self, c: LayerCounts) -> dict:
        out = {"compute": c.flops * self.e("E_SYNOP")}
        if c.population:
            out["neuron updates"] = c.neurons * self.e("E_UPD_ACTIVE")
            if not c.source_is_input:
                out["routing"] = c.in_size * self.route_pj(c.source, c.population)
        return out

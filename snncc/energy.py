"""Energy per inference from measured activity (Kundu et al.'s operation-count model).

Conventions (stated in every report):
  * FLOPs of a conv = k^2 * H_out * W_out * C_in * C_out; of a dense layer = fan_in * fan_out.
  * A synapse that receives spikes (or spike counts, or pooled spikes) performs
    accumulates: ACs = FLOPs x presynaptic spikes per neuron per inference
    (= firing rate x T, measured by simulation).
  * A synapse that receives analog values performs MACs. The direct-encoded first
    layer sees the same input at every step, so it is counted once per inference
    (``first_layer='once'``); ``first_layer='per_step'`` counts it T times. Any other
    analog-input synapse (a hybrid network) is counted at every step.
  * The ANN baseline is the same architecture with every synapse doing FLOPs MACs once.
  * 45 nm CMOS, 32-bit float (Horowitz, ISSCC 2014): E_MAC = 4.6 pJ, E_AC = 0.9 pJ.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Input, Neuron
from snncc.ir.types import Kind
from snncc.passes.validate import origin_of


@dataclass(frozen=True)
class EnergyModel:
    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    first_layer: str = "once"  # or "per_step"
    source: str = "Kundu et al. 2021 op counting; 45 nm constants from Horowitz, ISSCC 2014"

    def __post_init__(self):
        if self.first_layer not in ("once", "per_step"):
            raise ValueError(f"first_layer must be 'once' or 'per_step', got {self.first_layer!r}")


def _layer(graph, syn, types, activity, samples, timesteps, model):
    op = graph.op(syn)
    src = graph.inputs(syn)[0].src
    flops = op.flops(types[src], types[syn])
    origin_kind = types[origin_of(graph, src)].kind
    direct = isinstance(graph.op(origin_of(graph, src)), Input) and origin_kind is Kind.ANALOG
    row = {"name": syn, "op": type(op).__name__, "flops": flops, "input": types[src].kind.value}
    if origin_kind is Kind.ANALOG:
        steps = 1 if direct and model.first_layer == "once" else timesteps
        row.update(input_rate=None, sops=0.0, macs=float(flops * steps))
    else:
        per_neuron = activity[src] / (types[src].size * samples)  # spikes per input neuron per inference
        row.update(input_rate=per_neuron / timesteps, sops=flops * per_neuron, macs=0.0)
    pops = [c for c in graph.consumers(syn) if isinstance(graph.op(c), Neuron)]
    row["population"] = pops[0] if len(pops) == 1 else None
    row["neurons"] = types[pops[0]].size if row["population"] else types[syn].size
    row["firing_rate"] = (activity[pops[0]] / (types[pops[0]].size * samples * timesteps)
                          if row["population"] else None)
    row["energy_pj"] = row["macs"] * model.e_mac_pj + row["sops"] * model.e_ac_pj
    return row


def energy_report(graph: SpikeGraph, activity: dict, samples: int, timesteps: int,
                  model: EnergyModel = EnergyModel()) -> dict:
    """Per-layer and total energy per inference, and the equivalent ANN's energy."""
    types = graph.infer()
    layers = [_layer(graph, s, types, activity, samples, timesteps, model) for s in graph.synapses()]
    total = sum(r["energy_pj"] for r in layers)
    ann = sum(r["flops"] for r in layers) * model.e_mac_pj
    pops = graph.populations()
    spikes = sum(activity[p] for p in pops) / samples
    neurons = sum(types[p].size for p in pops)
    return {
        "conventions": {**asdict(model), "timesteps": timesteps, "samples": samples,
                        "per": "inference (one sample, all T steps)"},
        "layers": layers,
        "total_sops": sum(r["sops"] for r in layers),
        "total_macs": sum(r["macs"] for r in layers),
        "total_energy_pj": total,
        "ann_energy_pj": ann,
        "ann_over_snn": ann / total if total else None,
        "mean_firing_rate": spikes / (neurons * timesteps) if neurons else None,
    }

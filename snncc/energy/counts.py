"""Per-layer operation counts from measured activity (hardware independent).

Conventions (stated in every report):
  * FLOPs of a conv = kh * kw * H_out * W_out * (C_in / groups) * C_out (dilation only changes H_out,
    W_out); of a dense layer = fan_in * fan_out.
  * A synapse that receives spikes (or spike counts, or pooled spikes) performs
    accumulates: SOPs = FLOPs x presynaptic spikes per neuron per inference
    (= firing rate x T, measured by simulation).
  * A synapse that receives analog values performs MACs. The direct-encoded first
    layer sees the same input at every step, so it is counted once per inference
    (``first_layer='once'``); ``first_layer='per_step'`` counts it T times. Any other
    analog-input synapse (a hybrid network) is counted at every step.
  * The ANN baseline is the same architecture with every synapse doing FLOPs MACs once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Input, Neuron
from snncc.ir.types import Kind
from snncc.passes.validate import origin_of

FIRST_LAYER = ("once", "per_step")


@dataclass(frozen=True)
class LayerCounts:
    """One synapse layer's work per inference (one sample, all T steps)."""

    name: str
    op: str
    flops: int            # dense operations of one evaluation (the ANN's MACs)
    input: str            # value kind the synapse reads: spike, count or analog
    macs: float           # multiply-accumulates per inference (analog input)
    sops: float           # accumulates per inference (spike / count input)
    input_rate: float | None   # presynaptic spikes per neuron per step (None: analog input)
    population: str | None     # the population this synapse drives (None: not exactly one)
    neurons: int
    firing_rate: float | None  # spikes per neuron per step of that population

    def as_dict(self) -> dict:
        return asdict(self)


def _layer(graph, syn, types, activity, samples, timesteps, first_layer) -> LayerCounts:
    op = graph.op(syn)
    src = graph.inputs(syn)[0].src
    flops = op.flops(types[src], types[syn])
    origin = origin_of(graph, src)
    origin_kind = types[origin].kind
    if origin_kind is Kind.ANALOG:
        direct = isinstance(graph.op(origin), Input)
        steps = 1 if direct and first_layer == "once" else timesteps
        input_rate, sops, macs = None, 0.0, float(flops * steps)
    else:
        per_neuron = activity[src] / (types[src].size * samples)  # spikes per input neuron per inference
        input_rate, sops, macs = per_neuron / timesteps, flops * per_neuron, 0.0
    pops = [c for c in graph.consumers(syn) if isinstance(graph.op(c), Neuron)]
    pop = pops[0] if len(pops) == 1 else None
    return LayerCounts(name=syn, op=type(op).__name__, flops=flops, input=types[src].kind.value, macs=macs,
                       sops=sops, input_rate=input_rate, population=pop,
                       neurons=types[pop].size if pop else types[syn].size,
                       firing_rate=activity[pop] / (types[pop].size * samples * timesteps) if pop else None)


def count_layers(graph: SpikeGraph, activity: dict, samples: int, timesteps: int,
                 first_layer: str = "once") -> list[LayerCounts]:
    """Counts for every synapse of ``graph`` in depth order; ``activity`` summed over ``samples``."""
    if first_layer not in FIRST_LAYER:
        raise ValueError(f"first_layer must be 'once' or 'per_step', got {first_layer!r}")
    if samples < 1 or timesteps < 1:
        raise ValueError(f"need at least one sample and one step, got {samples} samples, T={timesteps}")
    types = graph.infer()
    return [_layer(graph, s, types, activity, samples, timesteps, first_layer) for s in graph.synapses()]


def mean_firing_rate(graph: SpikeGraph, activity: dict, samples: int, timesteps: int) -> float | None:
    types = graph.infer()
    pops = graph.populations()
    neurons = sum(types[p].size for p in pops)
    return sum(activity[p] for p in pops) / (samples * neurons * timesteps) if neurons else None

"""Per-layer operation counts from measured activity (hardware independent).

Conventions (stated in every report):
  * FLOPs of a conv = kh * kw * H_out * W_out * (C_in / groups) * C_out (dilation only changes H_out,
    W_out); of a dense layer = fan_in * fan_out.
  * A synapse that receives spikes (or pooled spikes) performs accumulates:
    SOPs = FLOPs x presynaptic spikes per neuron per inference (= firing rate x T, measured).
  * A synapse that receives graded values (COUNT: SEW spike ADD outputs in {0, 1, 2, ...}) counts, by
    default, one accumulate per unit of event value (a value-v event = v ACs: ``graded='events'``);
    ``graded='mac'`` counts it as dense MACs at every step, the convention of syops.
  * A synapse that receives analog values performs MACs. The direct-encoded first layer sees the
    same input at every step, so it is counted once per inference (``first_layer='once'``);
    ``first_layer='per_step'`` counts it T times. Any other analog-input synapse (a hybrid network)
    is counted at every step.
  * The ANN baseline is the same architecture with every synapse doing FLOPs MACs once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Input, Neuron
from snncc.ir.types import Kind
from snncc.passes.validate import origin_of

FIRST_LAYER = ("once", "per_step")
GRADED = ("events", "mac")


@dataclass(frozen=True)
class LayerCounts:
    """One synapse layer's work per inference (one sample, all T steps)."""

    name: str
    op: str
    flops: int            # dense operations of one evaluation (the ANN's MACs)
    input: str            # value kind of the presynaptic origin (through pooling/flatten): spike, count, analog
    macs: float           # multiply-accumulates per inference (analog input, or graded as MAC)
    sops: float           # accumulates per inference (spike / count input)
    input_rate: float | None   # presynaptic events per neuron per step (None: analog input)
    population: str | None     # the population this synapse drives (None: not exactly one)
    neurons: int
    firing_rate: float | None  # spikes per neuron per step of that population
    in_size: int = 0           # presynaptic elements per step
    out_size: int = 0          # synapse output elements per step
    weights: int = 0           # stored weights
    kernel_area: int = 1       # k_h * k_w (1 for a dense layer)
    out_channels: int = 0      # C_out (conv) or fan-out (dense)
    in_events: float = 0.0     # presynaptic events per inference (value-weighted for counts; 0 if analog)
    out_spikes: float = 0.0    # spikes per inference of the driven population
    timesteps: int = 1
    leaky: bool = False        # the driven population leaks (LIF): a multiply per neuron update
    source: str = ""           # the node the synapse reads through pooling/flatten (its presynaptic origin)
    source_is_input: bool = False   # that node is the graph's input

    @property
    def event_driven(self) -> bool:
        """The layer's synaptic work scales with presynaptic events (no dense MACs)."""
        return self.macs == 0 and self.input_rate is not None

    def at_rate(self, rate: float) -> "LayerCounts":
        """These counts with every spike rate (presynaptic and of the driven population) set to ``rate``
        per neuron per step; a layer with dense (MAC) input keeps its MACs. Used for break-even rates."""
        out = replace(self, out_spikes=self.neurons * rate * self.timesteps if self.population else 0.0,
                      firing_rate=rate if self.population else None)
        if not self.event_driven:
            return out
        return replace(out, input_rate=rate, in_events=self.in_size * rate * self.timesteps,
                       sops=self.flops * rate * self.timesteps)

    def as_dict(self) -> dict:
        return asdict(self)


def _geometry(op, in_type, out_type) -> dict:
    if isinstance(op, Conv):
        c_out, c_in, kh, kw = op.weight.shape
        return {"weights": int(op.weight.size), "kernel_area": int(kh * kw), "out_channels": int(c_out)}
    return {"weights": int(op.weight.size), "kernel_area": 1, "out_channels": int(op.weight.shape[0])}


def _layer(graph, syn, types, activity, samples, timesteps, first_layer, graded) -> LayerCounts:
    op = graph.op(syn)
    src = graph.inputs(syn)[0].src
    flops = op.flops(types[src], types[syn])
    origin = origin_of(graph, src)
    origin_kind = types[origin].kind
    in_events = 0.0
    if origin_kind is Kind.ANALOG:
        direct = isinstance(graph.op(origin), Input)
        steps = 1 if direct and first_layer == "once" else timesteps
        input_rate, sops, macs = None, 0.0, float(flops * steps)
    else:
        per_neuron = activity[src] / (types[src].size * samples)  # events (value-weighted) per input neuron
        input_rate = per_neuron / timesteps
        if origin_kind is Kind.COUNT and graded == "mac":
            sops, macs = 0.0, float(flops * timesteps)
        else:
            sops, macs, in_events = flops * per_neuron, 0.0, per_neuron * types[src].size
    pops = [c for c in graph.consumers(syn) if isinstance(graph.op(c), Neuron)]
    pop = pops[0] if len(pops) == 1 else None
    spikes = activity[pop] / samples if pop else 0.0
    return LayerCounts(name=syn, op=type(op).__name__, flops=flops, input=origin_kind.value, macs=macs,
                       sops=sops, input_rate=input_rate, population=pop,
                       neurons=types[pop].size if pop else types[syn].size,
                       firing_rate=spikes / (types[pop].size * timesteps) if pop else None,
                       in_size=types[src].size, out_size=types[syn].size, in_events=in_events, out_spikes=spikes,
                       timesteps=timesteps, leaky=bool(pop and graph.op(pop).params.leaky), source=origin,
                       source_is_input=bool(graph.op(origin).is_input),
                       **_geometry(op, types[src], types[syn]))


def count_layers(graph: SpikeGraph, activity: dict, samples: int, timesteps: int,
                 first_layer: str = "once", graded: str = "events") -> list[LayerCounts]:
    """Counts for every synapse of ``graph`` in depth order; ``activity`` summed over ``samples``."""
    if first_layer not in FIRST_LAYER:
        raise ValueError(f"first_layer must be 'once' or 'per_step', got {first_layer!r}")
    if graded not in GRADED:
        raise ValueError(f"graded must be 'events' or 'mac', got {graded!r}")
    if samples < 1 or timesteps < 1:
        raise ValueError(f"need at least one sample and one step, got {samples} samples, T={timesteps}")
    types = graph.infer()
    return [_layer(graph, s, types, activity, samples, timesteps, first_layer, graded) for s in graph.synapses()]


def mean_firing_rate(graph: SpikeGraph, activity: dict, samples: int, timesteps: int) -> float | None:
    types = graph.infer()
    pops = graph.populations()
    neurons = sum(types[p].size for p in pops)
    return sum(activity[p] for p in pops) / (samples * neurons * timesteps) if neurons else None

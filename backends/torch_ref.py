"""Reference executor: runs a SpikeGraph step by step with dense torch ops (float64).

This is the oracle the other backends are compared against. Per-op rules live in
``RULES`` keyed by op class (public: the Lava backend replays its recorded spike trains
through them with :func:`apply`); the neuron update comes from :mod:`snncc.neuron`.
Nodes whose value cannot change over time (synapses fed only by a direct-encoded
analog input) are evaluated once and reused at every step.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from snncc import neuron as nrn
from snncc.backends.base import Backend, Options, Program
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, PoolMode, Readout, ReadoutMode
from snncc.runtime import RunResult, check_input


def _t(a):
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float64)


def _dense(op, xs, _):
    return F.linear(xs[0], _t(op.weight), _t(op.bias))


def _conv(op, xs, _):
    return F.conv2d(xs[0], _t(op.weight), _t(op.bias), stride=op.stride, padding=op.padding,
                    dilation=op.dilation, groups=op.groups)


def _pool(op, xs, _):
    x = xs[0]
    if op.mode is PoolMode.MAX:
        return F.max_pool2d(x, op.kernel, op.stride, op.padding)
    # divisor_override=1 turns the window mean into an exact window sum (counts stay integers)
    divisor = None if op.mode is PoolMode.AVG else 1
    return F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True, divisor_override=divisor)


def _sum(op, xs, _):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _neuron(op, xs, state):
    leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = op.params.scalars()
    current = _sum(op, xs, state)
    inv_tau_syn = 1.0 / op.params.tau_syn
    if op.heterogeneous:  # per-neuron parameters (same arithmetic, element-wise)
        p = {k: _t(np.array(a)) for k, a in op.per_neuron(current.shape[1:]).items()}
        inv_tau, v_th, v_reset, v_rest, inv_tau_syn = \
            (1.0 / p["tau"] if leaky else 1.0), p["v_th"], p["v_reset"], p["v_rest"], 1.0 / p["tau_syn"]
    if op.current_based:
        i = state.get("i", torch.zeros_like(current))
        current = state["i"] = nrn.synapse(i, current, inv_tau_syn)
    v = state.get("v")
    if v is None:
        v = torch.zeros_like(current) + v_rest
    h = nrn.charge(v, current, leaky, inv_tau, v_rest, decay_input)
    s = nrn.fire(h, v_th).to(h.dtype)  # torch makes bool * 1.0 float32; keep the reset in float64
    state["v"] = nrn.reset(h, s, v_th, v_reset, soft)
    return s


def _integrator(op, xs, state):
    leaky, inv_tau, _, _, v_rest, _, decay_input = op.params.scalars()
    current = _sum(op, xs, state)
    if op.params.current_based:
        current = state["i"] = nrn.synapse(state.get("i", torch.zeros_like(current)), current, 1.0 / op.params.tau_syn)
    v = state.get("v", torch.zeros_like(current) + v_rest)
    state["v"] = nrn.charge(v, current, leaky, inv_tau, v_rest, decay_input)
    return state["v"]


def pool(op, xs, state=None):
    """The reference pooling rule (public for the simulators' bit-for-bit tests)."""
    return _pool(op, xs, state)


RULES = {
    Input: None,          # presented by the executor (run / replay), not computed
    Dense: _dense,
    Conv: _conv,
    Pool: _pool,
    Flatten: lambda op, xs, _: xs[0].flatten(1),
    Neuron: _neuron,
    Integrator: _integrator,
    Add: _sum,
    Readout: lambda op, xs, _: xs[0],
}


def apply(op, xs, state=None):
    """One op's reference output for its input values ``xs`` (state: the node's, or {})."""
    return RULES[type(op)](op, xs, {} if state is None else state)


class History:
    """Values of the last steps, for delayed edges: :meth:`inputs` gives a node's input values,
    a delay-d port reading its source's value d steps ago (zeros before the first step)."""

    def __init__(self, graph: SpikeGraph, types: dict, batch: int):
        self.graph, self.types, self.batch = graph, types, batch
        self.past = deque(maxlen=max(1, graph.max_delay()))  # past[-d]: the values of step t - d

    def inputs(self, n, current: dict) -> list:
        return [current[p.src] if p.delay == 0 else self._past(p) for p in self.graph.inputs(n)]

    def _past(self, p):
        if len(self.past) >= p.delay:
            return self.past[-p.delay][p.src]
        return torch.zeros((self.batch, *self.types[p.src].shape), dtype=torch.float64)

    def push(self, current: dict) -> None:
        self.past.append(current)


def static_nodes(graph: SpikeGraph, direct_inputs) -> set:
    """Nodes whose value never changes over time: fed only (same step) by a direct input."""
    static = set(direct_inputs)
    for n in graph.order():
        ports = graph.inputs(n)
        if ports and graph.op(n).can_be_static and all(p.delay == 0 and p.src in static for p in ports):
            static.add(n)
    return static


def run(graph: SpikeGraph, x, timesteps: int, record: bool = False) -> RunResult:
    x = check_input(graph, x, timesteps)
    types = graph.infer()
    order = graph.order()
    TorchBackend().check_ops(graph)
    (inp,) = graph.input_nodes
    direct = x.ndim == 1 + len(types[inp].shape)
    xt = torch.as_tensor(x, dtype=torch.float64)
    static = static_nodes(graph, [inp] if direct else [])
    batch = x.shape[0]
    values, history, states = {}, History(graph, types, x.shape[0]), {n: {} for n in order}
    activity = {n: 0.0 for n in order}
    trains = {n: [] for n in graph.populations()} if record else {}
    (out,) = graph.output_nodes
    readout = None
    with torch.no_grad():
        for t in range(timesteps):
            current = {}
            for n in order:
                op = graph.op(n)
                if n in static and n in values:
                    current[n] = values[n]
                elif op.is_input:
                    current[n] = xt if direct else xt[:, t]
                else:
                    current[n] = apply(op, history.inputs(n, current), states[n])
                activity[n] += float(current[n].sum())
                if n in trains:
                    trains[n].append(current[n].to(torch.uint8).numpy())
            values = {n: v for n, v in current.items() if n in static}
            history.push(current)
            readout = current[out] if readout is None else readout + current[out]
    output = readout.numpy()
    if graph.op(out).mode is ReadoutMode.MEAN:
        output = output / timesteps
    return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                     trains={n: np.stack(v) for n, v in trains.items()})


class TorchBackend(Backend):
    """The reference executor behind the Backend interface (no plan: it steps the graph)."""

    name = "torch"
    Options = Options
    rules = RULES

    def lower(self, graph: SpikeGraph, options: Options) -> Program:
        self.check_ops(graph)
        return Program(self.name, graph, options)

    def run(self, program: Program, x, timesteps: int, record: bool = False) -> RunResult:
        return run(program.graph, x, timesteps, record)


BACKEND = TorchBackend()

"""The ``dense`` backend: a float32 multi-step torch evaluation of a SpikeGraph.

This is what a user would write with spikingjelly's multi-step mode: every synapse (Dense, Conv, Pool)
runs once over all T*B rows of its input (``F.linear`` / ``F.conv2d`` on a (T*B, ...) tensor), and each
neuron population loops over T with the update of :mod:`snncc.neuron` (the one definition). A node fed
only by a direct-encoded input is evaluated once, not T times (the same rule as the reference and the
simulator). ``per_step=True`` is the other classic baseline: the graph stepped one time step at a time.

**float32, not the reference.** Weights, currents and membranes are float32 (the reference ``torch``
backend and ``numba`` compute in float64), so a membrane that lands within float32 rounding of the
threshold can fire in one and not the other: a dense run may differ from the reference by a few spikes
(and then by everything downstream of them). ``snncc run --backend dense --compare torch`` counts them
entry by entry; its analog totals (synapse currents) differ from the float64 ones beyond the float64
tolerance of :mod:`snncc.agreement` by construction, and the verdict says so.

It serves ``snncc run`` / ``energy report`` (``--backend dense``), the simulator benchmark (``snncc bench
sim --matrix``) and the rate calibration of its graphs. Feed-forward graphs (no delayed edges) of
homogeneous LIF/IF populations (no per-neuron or CUBA parameters), refused by node otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from snncc import neuron as nrn
from snncc.backends.base import Backend, LoweringError, Options, Program
from snncc.backends.torch_ref import static_nodes
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import (Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, PoolMode, Readout,
                          ReadoutMode)
from snncc.runtime import RunResult, check_input

_BATCH_BUDGET = 512 << 20  # bytes of float32 activations per batch chunk


def _t32(a):
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _pool(op, x):
    if op.mode is PoolMode.MAX:
        return F.max_pool2d(x, op.kernel, op.stride, op.padding)
    divisor = None if op.mode is PoolMode.AVG else 1
    return F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True, divisor_override=divisor)


def _synapse(ev, n, op, ins, steps, state):
    return ev.synapse(n, op, ins[0])


def _neuron(ev, n, op, ins, steps, state):
    return ev.fire(op, sum(ins[1:], ins[0]), steps, state, n)


def _sum(ev, n, op, ins, steps, state):
    return sum(ins[1:], ins[0])


# op class -> rule(evaluator, node, op, input values, steps, state) -> value (steps or 1, B, *shape)
RULES = {
    Input: None,          # the batch itself
    Dense: _synapse,
    Conv: _synapse,
    Pool: _synapse,
    Flatten: lambda ev, n, op, ins, steps, state: ins[0].flatten(2),
    Neuron: _neuron,
    Add: _sum,
    Readout: _sum,
}
REFUSES = {Integrator: "dense backend has no rule for op Integrator (a non-spiking LI/I population: "
                       "use --backend torch or numba)"}


class DenseTorch:
    """``DenseTorch(graph).run(x, T, record)`` -> :class:`~snncc.runtime.RunResult` (float32 throughout).

    ``scale``: {synapse node: factor} applied to weights and bias (used by :func:`calibrate`)."""

    def __init__(self, graph: SpikeGraph, per_step: bool = False):
        self.graph, self.per_step = graph, per_step
        self.order = graph.order()
        self.types = graph.infer()
        for n in self.order:
            op = graph.op(n)
            if type(op) not in RULES:
                raise LoweringError(REFUSES.get(type(op), f"dense backend has no rule for op {type(op).__name__}")
                                    + f" (node {n!r})")
            if any(p.delay for p in graph.inputs(n)):
                raise LoweringError(f"dense backend: node {n!r} has a delayed input (recurrence or NIR Delay; "
                                    f"use --backend torch or numba)")
            if isinstance(op, Neuron) and (op.heterogeneous or op.current_based):
                raise LoweringError(f"dense backend: node {n!r} has per-neuron or CUBA parameters "
                                    f"(use --backend torch or numba)")
        self.params = {n: (_t32(graph.op(n).weight), _t32(graph.op(n).bias)) for n in graph.synapses()}
        (self.input,), (self.output,) = graph.input_nodes, graph.output_nodes
        self.direct = graph.op(self.input).direct
        self.static = static_nodes(graph, [self.input] if self.direct else [])

    def synapse(self, n, op, x):
        """One synapse over all rows of x (steps, B, *shape) at once."""
        rows = x.reshape(-1, *x.shape[2:])
        if isinstance(op, Dense):
            y = F.linear(rows, *self.params[n])
        elif isinstance(op, Conv):
            y = F.conv2d(rows, *self.params[n], stride=op.stride, padding=op.padding, dilation=op.dilation,
                         groups=op.groups)
        else:
            y = _pool(op, rows)
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])

    def forward(self, x, steps: int, state: dict, hook=None) -> dict:
        """Values of every node for ``steps`` steps, (steps or 1, B, *shape): 1 for a node that never
        changes (computed once, kept in ``state``). ``state`` carries membranes across calls.
        ``hook(name, inputs) -> current``: lets :func:`calibrate` rescale a population's inputs."""
        vals = {}
        for n in self.order:
            op = self.graph.op(n)
            ins = [vals[p.src] for p in self.graph.inputs(n)]
            if op.is_input:
                vals[n] = x
            elif ("static", n) in state:  # computed once, from the step-0 input
                vals[n] = state[("static", n)]
            elif hook is not None and op.is_population:
                vals[n] = self.fire(op, hook(n, ins), steps, state, n)
            else:
                vals[n] = RULES[type(op)](self, n, op, ins, steps, state)
            if n in self.static:
                state[("static", n)] = vals[n]
        return vals

    @staticmethod
    def fire(op, current, steps, state, name):
        """The population's spikes for ``steps`` steps (the neuron loop over T), membrane in state."""
        leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = op.params.scalars()
        v = state.get(name)
        if v is None:
            v = torch.full(current.shape[1:], float(v_rest))
        out = torch.empty((steps, *current.shape[1:]))
        for t in range(steps):
            h = nrn.charge(v, current[t if current.shape[0] > 1 else 0], leaky, inv_tau, v_rest, decay_input)
            s = nrn.fire(h, v_th)
            v = nrn.reset(h, s, v_th, v_reset, soft)
            out[t] = s
        state[name] = v
        return out

    def _tensor(self, x):
        xt = torch.as_tensor(x, dtype=torch.float32)
        return xt.unsqueeze(0) if self.direct else xt.transpose(0, 1)

    def prepare(self, x, timesteps: int):
        """A batch as :meth:`forward` takes it: (1 or T, B, *shape) float32, after ``check_input``."""
        return self._tensor(check_input(self.graph, x, timesteps))

    def _chunk(self, x, steps, record):
        """One batch chunk: (readout sum over steps, {node: activity}, {population: train})."""
        xt = self._tensor(x)
        state, activity, trains, readout = {}, dict.fromkeys(self.order, 0.0), {}, 0.0
        spans = [(t, t + 1) for t in range(steps)] if self.per_step else [(0, steps)]
        for t0, t1 in spans:
            vals = self.forward(xt if self.direct else xt[t0:t1], t1 - t0, state)
            for n, v in vals.items():   # float64 totals: a float32 sum of many spikes is not exact
                activity[n] += float(v.sum(dtype=torch.float64)) * ((t1 - t0) if n in self.static else 1)
                if record and n in self.graph.populations():
                    trains.setdefault(n, []).append(v.to(torch.uint8).numpy())
            out = vals[self.output]
            readout = readout + (out[0] * (t1 - t0) if self.output in self.static else out.sum(0))
        return readout, activity, {n: np.concatenate(v) for n, v in trains.items()}

    def run(self, x, timesteps: int, record: bool = False) -> RunResult:
        x = check_input(self.graph, x, timesteps)
        per_sample = 4 * timesteps * sum(t.size for t in self.types.values())
        chunk = max(1, min(len(x), _BATCH_BUDGET // per_sample))
        outputs, activity, trains = [], dict.fromkeys(self.order, 0.0), {}
        with torch.no_grad():
            for b0 in range(0, len(x), chunk):
                out, act, tr = self._chunk(x[b0:b0 + chunk], timesteps, record)
                outputs.append(out.numpy())
                for n, v in act.items():
                    activity[n] += v
                for n, v in tr.items():
                    trains.setdefault(n, []).append(v)
        output = np.concatenate(outputs).reshape(len(x), *self.types[self.output].shape).astype(np.float64)
        if self.graph.op(self.output).mode is ReadoutMode.MEAN:
            output = output / timesteps
        return RunResult(output=output, timesteps=timesteps, batch=len(x), activity=activity,
                         trains={n: np.concatenate(v, axis=1) for n, v in trains.items()})


@dataclass(frozen=True)
class DenseOptions(Options):
    """threads: torch's intra-op threads during a run (0: torch's default, restored after each batch)."""

    threads: int = 0


class DenseBackend(Backend):
    """``--backend dense``: :class:`DenseTorch` behind the Backend interface (float32; see the module text).
    The plan is the evaluator (weights converted to float32 once, reused for every batch)."""

    name = "dense"
    Options = DenseOptions
    rules = RULES
    refuses = REFUSES

    def lower(self, graph: SpikeGraph, options: Options) -> Program:
        self.check_ops(graph)
        return Program(self.name, graph, options, plan=DenseTorch(graph))

    def run(self, program: Program, x, timesteps: int, record: bool = False) -> RunResult:
        threads, previous = program.options.threads, torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return program.plan.run(x, timesteps, record)
        finally:
            torch.set_num_threads(previous)

    def describe(self, options: Options) -> dict:
        return {"precision": "float32"} | ({"threads": options.threads} if options.threads else {})

    def label(self, options: Options) -> str:
        return "float32"


BACKEND = DenseBackend()

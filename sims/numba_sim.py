"""Numba simulator for SpikeGraphs (same semantics as the torch reference): the plan.

Synapses pick their kernel per call from their input's measured density: an event-driven
scatter (a Dense or Conv adds ``value * weights`` of each nonzero input, so the work is
proportional to the spikes) where inputs are sparse, a dense BLAS product where they are not
(the per-op rules: :mod:`snncc.sims.numba_rules`; threads: :mod:`snncc.sims.numba_threads`).

Evaluation order. Outside recurrent loops a node's T steps depend only on its inputs'
T steps (a synapse is stateless, a neuron carries its state along t), so each such node
is evaluated for all T steps and samples at once: one multi-threaded kernel call per node,
not one per step. Nodes on a cycle through a delayed edge are stepped time-major.

Storage. Each node's values live in a (L+T, B, size) float64 buffer whose first L rows (L: the
longest edge delay, at least 1) are zero: step t is row L+t and a delay-d edge reads row L+t-d,
so delayed reads need no copies.

The neuron update is compiled from :mod:`snncc.neuron` itself -- there is one definition
(the kernels: :mod:`snncc.sims.numba_kernels`).

Nothing happens at import time beyond compiling-on-demand declarations: the stale-cache
check (file I/O) runs on the first Plan, the worker threads start on the first parallel
kernel call, and the thread count is a Plan parameter (default: numba's NUMBA_NUM_THREADS).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncc.backends.base import Backend, LoweringError, Options, Program
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import ReadoutMode
from snncc.ir.types import Kind
from snncc.runtime import RunResult, check_input
from snncc.sims.numba_f32 import plan_float32
from snncc.sims.numba_kernels import check_cache_once, time_sum
from snncc.sims.numba_rules import RULES
from snncc.sims.numba_threads import default_threads

__all__ = ["Plan", "run", "RULES", "default_threads", "NumbaOptions", "NumbaBackend", "BACKEND"]

_BUFFER_BUDGET = 256 << 20  # bytes of node buffers per batch chunk


class _Node:
    def __init__(self, name, op, ports, ttype, data):
        self.name, self.op, self.ports, self.type, self.data = name, op, ports, ttype, data
        self.size = ttype.size
        self.static = False
        # Flatten and Readout pass values through unchanged (storage is already flat):
        # on a same-step edge they share their source's buffer.
        self.alias = op.passes_through and ports[0].delay == 0


class Plan:
    """A graph compiled for the simulator: weights in kernel layout, evaluation schedule
    and reusable buffers (so one Plan must not run in two threads at once).
    ``Plan(graph).run(x, T)`` is what :func:`run` does. ``threads``: worker threads of the
    kernels (default :func:`default_threads`)."""

    def __init__(self, graph: SpikeGraph, threads: int | None = None):
        check_cache_once()
        self.graph = graph
        self.threads = max(1, int(threads)) if threads is not None else default_threads()
        types = graph.infer()
        self.order = graph.order()
        self.nodes = {}
        BACKEND.check_ops(graph)
        for n in self.order:
            op = graph.op(n)
            ports = graph.inputs(n)
            tin = types[ports[0].src] if ports else None
            self.nodes[n] = _Node(n, op, ports, types[n], RULES[type(op)][0](op, tin, types[n]))
        (self.input,), (self.output,) = graph.input_nodes, graph.output_nodes
        self.populations = graph.populations()
        self._mark_static(types[self.input].kind is Kind.ANALOG)
        self.schedule = graph.components()
        self.lead = max(1, graph.max_delay())  # leading zero rows
        plan_float32(self, types)
        self._buffers = {}  # (steps, batch) -> node buffers

    def float32_stats(self, reset: bool = False) -> dict:
        """Neurons fed by float32 currents (sims/numba_f32.py) since the last reset: {"checked": neuron runs
        (one neuron of one sample over one call) checked against the error bound, "recomputed": how many of
        them were uncertain somewhere and recomputed exactly in float64}."""
        got = [nd.data["f32"]["stats"] for nd in self.nodes.values() if "tree" in nd.data.get("f32", {})]
        out = {"checked": sum(g[0] for g in got), "recomputed": sum(g[1] for g in got)}
        for g in got if reset else ():
            g[:] = [0, 0]
        return out

    def _mark_static(self, direct: bool):
        """Same rule as the reference: values fed only by a direct-encoded input never
        change, so they are computed once (then copied to every step)."""
        self.nodes[self.input].static = direct
        for node in self.nodes.values():
            if node.ports and node.op.can_be_static:
                node.static = all(p.delay == 0 and self.nodes[p.src].static for p in node.ports)

    def _chunk(self, batch: int, steps: int) -> int:
        per_sample = 8 * (steps + self.lead) * sum(nd.size for nd in self.nodes.values() if not nd.alias)
        most = max(1, min(batch, _BUFFER_BUDGET // per_sample))
        return -(-batch // -(-batch // most))  # equal chunks: one buffer shape, reused across chunks and runs

    def _alloc(self, steps: int, batch: int) -> dict:
        """Node buffers, reused across calls of the same shape (fresh large arrays cost
        page faults comparable to a whole small-network run). The first ``lead`` rows stay zero."""
        bufs = self._buffers.get((steps, batch))
        if bufs is None:  # two shapes kept: a batch's chunks and their remainder (at most one budget more)
            if len(self._buffers) >= 2:
                self._buffers.pop(next(iter(self._buffers)))
            bufs = {}
            for n in self.order:
                nd = self.nodes[n]
                if nd.alias:
                    bufs[n] = bufs[nd.ports[0].src]
                else:
                    bufs[n] = np.empty((self.lead + steps, batch, nd.size))
                    bufs[n][:self.lead] = 0.0
            self._buffers[(steps, batch)] = bufs
        return bufs

    def _eval(self, nd, bufs, state, t0, t1) -> float:
        """Evaluate steps [t0, t1) of one node; returns the sum of the values written."""
        a, b = t0 + self.lead, t1 + self.lead
        ins = [bufs[p.src][a - p.delay:b - p.delay] for p in nd.ports]
        if "f32" in nd.data and "leaves" in nd.data["f32"]:  # a checked neuron may recompute from these
            state[(nd.name, "views")] = {(n, d): bufs[n][a - d:b - d] for n, d in nd.data["f32"]["leaves"]}
        return RULES[type(nd.op)][1](nd, ins, bufs[nd.name][a:b], state, self.threads)

    def _simulate(self, x, steps: int) -> tuple:
        """Run one batch chunk; returns (buffers, {node: sum of its values})."""
        batch = x.shape[0]
        bufs = self._alloc(steps, batch)
        inp = bufs[self.input]
        if self.nodes[self.input].static:
            inp[self.lead:] = x.reshape(1, batch, -1)
        else:
            inp[self.lead:] = x.reshape(batch, steps, -1).transpose(1, 0, 2)
        totals = {self.input: float(x.sum()) * (steps if self.nodes[self.input].static else 1)}
        state = {n: np.broadcast_to(np.asarray(nd.data["v0"], np.float64), (batch, nd.size)).copy()
                 for n, nd in self.nodes.items() if nd.op.is_population}
        for names, looped in self.schedule:
            nodes = [self.nodes[n] for n in names if n != self.input and not self.nodes[n].alias]
            if looped:
                for nd in nodes:
                    totals[nd.name] = 0.0
                for t in range(steps):
                    for nd in nodes:
                        totals[nd.name] += self._eval(nd, bufs, state, t, t + 1)
                continue
            for nd in nodes:
                totals[nd.name] = self._eval(nd, bufs, state, 0, 1 if nd.static else steps)
                if nd.static:  # the reference reuses the step-0 value at every step
                    bufs[nd.name][self.lead + 1:] = bufs[nd.name][self.lead]
                    totals[nd.name] *= steps
        for n in self.order:  # a pass-through node holds its source's values
            if self.nodes[n].alias:
                totals[n] = totals[self.nodes[n].ports[0].src]
        return bufs, totals

    def run(self, x, timesteps: int, record: bool = False) -> RunResult:
        x = check_input(self.graph, x, timesteps)
        batch = x.shape[0]
        chunk = self._chunk(batch, timesteps)
        activity = dict.fromkeys(self.order, 0.0)
        outputs, trains = [], {p: [] for p in self.populations} if record else {}
        for b0 in range(0, batch, chunk):
            bufs, totals = self._simulate(x[b0:b0 + chunk], timesteps)
            for n in self.order:
                activity[n] += totals[n]
            for p in trains:
                trains[p].append(bufs[p][self.lead:].astype(np.uint8).reshape(
                    timesteps, -1, *self.nodes[p].type.shape))
            outputs.append(time_sum(bufs[self.output][self.lead:]))
        output = np.concatenate(outputs).reshape(batch, *self.nodes[self.output].type.shape)
        if self.nodes[self.output].op.mode is ReadoutMode.MEAN:
            output = output / timesteps
        return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                         trains={p: np.concatenate(v, axis=1) for p, v in trains.items()})


def run(graph: SpikeGraph, x, timesteps: int, record: bool = False, threads: int | None = None) -> RunResult:
    return Plan(graph, threads).run(x, timesteps, record)


@dataclass(frozen=True)
class NumbaOptions(Options):
    """threads: kernel worker threads (0: numba's NUMBA_NUM_THREADS)."""

    threads: int = 0


class NumbaBackend(Backend):
    """The event-driven simulator behind the Backend interface; its program is a :class:`Plan`."""

    name = "numba"
    Options = NumbaOptions
    rules = RULES

    def lower(self, graph: SpikeGraph, options: NumbaOptions) -> Program:
        return Program(self.name, graph, options, Plan(graph, options.threads or None))

    def run(self, program: Program, x, timesteps: int, record: bool = False) -> RunResult:
        return program.plan.run(x, timesteps, record)

    _KEYS = ("format", "event_driven_synapses", "populations", "layers")

    def save(self, program: Program, folder) -> tuple:
        """target.json: the plan's description (the simulator builds its Plan at load time and
        numba caches its kernels on disk, so the graph is the program)."""
        graph = program.graph
        types = graph.infer()
        layers = [{"node": n, "op": type(graph.op(n)).__name__, "kind": types[n].kind.value,
                   "shape": list(types[n].shape)} for n in graph.order()]
        body = {"format": "snncc-numba/1",
                "event_driven_synapses": [n for n in graph.synapses()
                                          if types[graph.inputs(n)[0].src].kind is not Kind.ANALOG],
                "populations": graph.populations(), "layers": layers}
        return body, graph.summary() + "\n"

    def check_target(self, config: dict, options: NumbaOptions, path) -> None:
        for key in self._KEYS:
            if key not in config:
                raise LoweringError(f"{path}: missing field {key!r}")
        for key in sorted(set(config) - set(self._KEYS)):
            raise LoweringError(f"{path}: unknown field {key!r}")
        if config["format"] != "snncc-numba/1":
            raise LoweringError(f"{path}: field 'format' is {config['format']!r}, not 'snncc-numba/1'")


BACKEND = NumbaBackend()

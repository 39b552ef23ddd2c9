"""Event-driven Numba simulator for SpikeGraphs (same semantics as the torch reference).

Synapses are event driven: a Dense or Conv scans its input for nonzero entries and adds
``value * weights`` of each one (a weight row / a kernel footprint) into the output
current, so the work is proportional to the number of spikes, not to the layer size.

Evaluation order. Outside recurrent loops a node's T steps depend only on its inputs'
T steps (a synapse is stateless, a neuron carries its state along t), so each such node
is evaluated for all T steps and samples at once: one multi-threaded kernel call per node,
not one per step. Nodes on a cycle through a delayed edge are stepped time-major.

Storage. Each node's values live in a (T+1, B, size) float64 buffer whose row 0 is zero:
step t is row t+1 and a delay-1 edge reads row t, so delayed reads need no copies.

The neuron update is compiled from :mod:`snncc.neuron` itself -- there is one definition
(the kernels: :mod:`snncc.sims.numba_kernels`).

Nothing happens at import time beyond compiling-on-demand declarations: the stale-cache
check (file I/O) runs on the first Plan, the worker threads start on the first parallel
kernel call, and the thread count is a Plan parameter (default: numba's NUMBA_NUM_THREADS).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import networkx as nx
import numba
import numpy as np

from snncc.backends.base import Backend, LoweringError, Options, Program
from snncc.ir.graph import SpikeGraph
from snncc import neuron as nrn
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, PoolMode, Readout, ReadoutMode
from snncc.ir.types import Kind
from snncc.runtime import RunResult, check_input
from snncc.sims.numba_kernels import (NEURON_BLOCK, check_cache_once, conv_rows, dense_tile, neuron_arrays,
                                      neuron_blocks, pool, time_sum)

_BUFFER_BUDGET = 256 << 20  # bytes of node buffers per batch chunk
_PARALLEL_MIN_WORK = 1 << 20  # below this (~element operations) one thread is faster
_TASKS = 8  # tasks per thread and kernel call: small tasks even out uneven spike counts
_DENSITY = 8  # assumed 1/8 of synapse inputs nonzero when estimating work

# -- threads ------------------------------------------------------------------------
# Kernels are serial nogil functions over a task range, shared out to a thread pool.
# Not numba.prange: a prange loop calling these helpers took ~10x longer to compile
# (12 s vs 1 s for the conv), and its static fork/join stalls for a whole scheduler
# slice when another process holds a core. Here the calling thread takes tasks too,
# and a worker that has not started by the time the work is done is simply cancelled.
_EXECUTORS: dict = {}   # thread count -> pool of count - 1 workers, created on first use
_EXECUTORS_LOCK = threading.Lock()


def default_threads() -> int:
    return max(1, numba.config.NUMBA_NUM_THREADS)


def _executor(threads: int) -> ThreadPoolExecutor:
    with _EXECUTORS_LOCK:
        if threads not in _EXECUTORS:
            _EXECUTORS[threads] = ThreadPoolExecutor(threads - 1, "snncc-sim")
        return _EXECUTORS[threads]


def _share(kernel, ranges, args, work: int, threads: int) -> float:
    """sum(kernel(*r, *args) for r in ranges), on ``threads`` threads when the work is large."""
    calls = [r + args for r in ranges]
    results = [0.0] * len(calls)
    if threads == 1 or len(calls) == 1 or work < _PARALLEL_MIN_WORK:
        return float(sum(kernel(*c) for c in calls))
    todo = iter(range(len(calls)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            results[i] = kernel(*calls[i])

    pool = _executor(threads)
    helpers = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for f in helpers:
        if not f.cancel():
            f.result()
    return float(sum(results))  # in task order: deterministic


def _ranges(n: int, parts: int) -> list:
    parts = max(1, min(n, parts))
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


# -- per-op rules: evaluate steps [t0, t1) given input views (steps, B, size) ----------
def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _f64(a, n=None):
    return np.zeros(n) if a is None else np.ascontiguousarray(a, dtype=np.float64)


def _weights(a):
    """Weights as float32 when that is lossless (any network trained in float32), else float64.
    Accumulation stays float64 either way, so results are identical; float32 halves the
    memory traffic of the event loop, which is bandwidth bound."""
    a = np.asarray(a, dtype=np.float64)
    small = a.astype(np.float32)
    return np.ascontiguousarray(small if np.array_equal(small, a) else a)


def _prep_dense(op, tin, tout):
    return {"w_t": _weights(np.asarray(op.weight).T), "bias": _f64(op.bias, tout.shape[0])}


def _eval_dense(node, ins, out, state, threads):
    """Tiles: a few row chunks per thread so uneven spike counts balance out; column
    blocks too when there are few rows (one sample stepped time-major)."""
    x, o = _rows(ins[0]), _rows(out)
    rows, n_out = o.shape
    if rows >= 2 * threads:
        tiles = [r + (0, n_out) for r in _ranges(rows, _TASKS * threads)]
    else:
        cols = _ranges(n_out, min(2 * threads, n_out // 64))
        tiles = [(r, r + 1) + c for r in range(rows) for c in cols]
    return _share(dense_tile, tiles, (x, node.data["w_t"], node.data["bias"], o),
                  x.size * (1 + n_out // _DENSITY), threads)


def _prep_conv(op, tin, tout):
    dims = (*tin.shape[1:], *tout.shape[1:], *op.stride, *op.padding)
    return {"w_t": _weights(np.asarray(op.weight).transpose(1, 2, 3, 0)), "bias": _f64(op.bias, tout.shape[0]),
            "dims": tuple(int(d) for d in dims)}


def _eval_conv(node, ins, out, state, threads):
    d = node.data
    x = _rows(ins[0])
    work = x.size * (1 + d["w_t"][0].size // _DENSITY)  # kh * kw * C_out adds per event
    return _share(conv_rows, _ranges(x.shape[0], _TASKS * threads),
                  (x, d["w_t"], d["bias"], _rows(out), *d["dims"]), work, threads)


def _prep_pool(op, tin, tout):
    dims = (*tin.shape, *tout.shape[1:], *op.kernel, *op.stride, *op.padding)
    return {"args": tuple(int(d) for d in dims) + ({PoolMode.MAX: 0, PoolMode.AVG: 1, PoolMode.SUM: 2}[op.mode],)}


def _eval_pool(node, ins, out, state, threads):
    return pool(_rows(ins[0]), _rows(out), *node.data["args"])


def _prep_neuron(op, tin, tout):
    leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = op.params.scalars()
    data = {"params": (int(leaky), float(inv_tau), float(v_th), float(v_reset), float(v_rest), int(soft),
                       int(decay_input)),
            "v0": v_rest}
    if op.heterogeneous or op.current_based:  # per-neuron parameters and/or a synaptic current
        p = {k: np.ascontiguousarray(a, np.float64).reshape(-1) for k, a in op.per_neuron(tout.shape).items()}
        inv = 1.0 / p["tau"] if leaky else np.ones_like(p["tau"])
        data["v0"] = p["v_rest"]
        data["arrays"] = (int(leaky), inv, p["v_th"], p["v_reset"], p["v_rest"], int(soft), int(decay_input),
                          int(op.current_based), 1.0 / p["tau_syn"])
    return data


def _summed(ins):
    """Element-wise sum in port order, as the reference forms it."""
    if len(ins) == 1:
        return ins[0]
    total = ins[0] + ins[1]
    for x in ins[2:]:
        total += x
    return total


def _eval_neuron(node, ins, out, state, threads):
    if "arrays" in node.data:  # per-neuron parameters and/or a CUBA synaptic current: one serial kernel
        v = state[node.name]
        isyn = state.setdefault((node.name, "i"), np.zeros_like(v))
        return neuron_arrays(np.ascontiguousarray(_summed(ins)), v, isyn, out, *node.data["arrays"])
    blocks = out.shape[1] * -(-out.shape[2] // NEURON_BLOCK)
    return _share(neuron_blocks, _ranges(blocks, _TASKS * threads),
                  (_summed(ins), state[node.name], out, *node.data["params"]), 4 * out.size, threads)


def _prep_integrator(op, tin, tout):
    leaky, inv_tau, _, _, v_rest, _, decay_input = op.params.scalars()
    return {"p": (leaky, inv_tau, v_rest, decay_input, op.params.current_based, 1.0 / op.params.tau_syn)}


def _eval_integrator(node, ins, out, state, threads):
    """A non-spiking population: the neuron's charge (and synapse) per step, vectorised over neurons."""
    leaky, inv_tau, v_rest, decay_input, cuba, inv_tau_syn = node.data["p"]
    cur = _summed(ins)
    v = state.setdefault((node.name, "v"), np.full(cur.shape[1:], v_rest))
    i = state.setdefault((node.name, "i"), np.zeros(cur.shape[1:]))
    for t in range(cur.shape[0]):
        x = cur[t]
        if cuba:
            i[...] = nrn.synapse(i, x, inv_tau_syn)
            x = i
        v[...] = nrn.charge(v, x, leaky, inv_tau, v_rest, decay_input)
        out[t] = v
    return float(out.sum())


def _eval_sum(node, ins, out, state, threads):  # Add; Flatten / Readout on a delayed edge (copy)
    out[...] = _summed(ins)
    return float(out.sum())


def _no_prep(op, tin, tout):
    return {}


RULES = {  # op class: (prepare(op, in_type, out_type) -> data, evaluate)
    Dense: (_prep_dense, _eval_dense),
    Conv: (_prep_conv, _eval_conv),
    Pool: (_prep_pool, _eval_pool),
    Neuron: (_prep_neuron, _eval_neuron),
    Integrator: (_prep_integrator, _eval_integrator),
    Add: (_no_prep, _eval_sum),
    Flatten: (_no_prep, _eval_sum),
    Readout: (_no_prep, _eval_sum),
    Input: (_no_prep, None),
}


class _Node:
    def __init__(self, name, op, ports, ttype, data):
        self.name, self.op, self.ports, self.type, self.data = name, op, ports, ttype, data
        self.size = ttype.size
        self.static = False
        # Flatten and Readout pass values through unchanged (storage is already flat):
        # on a same-step edge they share their source's buffer.
        self.alias = op.passes_through and ports[0].delay == 0


def _schedule(graph: SpikeGraph, order: list) -> list:
    """[(names, looped)]: strongly connected components of the graph *with* its delayed
    edges, in dependency order. A component with a cycle must be stepped time-major
    (looped); every other node is evaluated for all T steps at once."""
    full = nx.DiGraph()
    full.add_nodes_from(order)
    full.add_edges_from((p.src, n) for n in order for p in graph.inputs(n))
    index = {n: i for i, n in enumerate(order)}
    dag = nx.condensation(full)
    first = {c: min(index[n] for n in dag.nodes[c]["members"]) for c in dag.nodes}
    steps = []
    for c in nx.lexicographical_topological_sort(dag, key=first.get):
        names = sorted(dag.nodes[c]["members"], key=index.get)
        steps.append((names, len(names) > 1 or full.has_edge(names[0], names[0])))
    return steps


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
        self.schedule = _schedule(graph, self.order)
        self._buffers = (None, {})

    def _mark_static(self, direct: bool):
        """Same rule as the reference: values fed only by a direct-encoded input never
        change, so they are computed once (then copied to every step)."""
        self.nodes[self.input].static = direct
        for node in self.nodes.values():
            if node.ports and node.op.can_be_static:
                node.static = all(p.delay == 0 and self.nodes[p.src].static for p in node.ports)

    def _chunk(self, batch: int, steps: int) -> int:
        per_sample = 8 * (steps + 1) * sum(nd.size for nd in self.nodes.values() if not nd.alias)
        return max(1, min(batch, _BUFFER_BUDGET // per_sample))

    def _alloc(self, steps: int, batch: int) -> dict:
        """Node buffers, reused across calls of the same shape (fresh large arrays cost
        page faults comparable to a whole small-network run). Row 0 stays zero."""
        key, bufs = self._buffers
        if key != (steps, batch):
            bufs = {}
            for n in self.order:
                nd = self.nodes[n]
                if nd.alias:
                    bufs[n] = bufs[nd.ports[0].src]
                else:
                    bufs[n] = np.empty((steps + 1, batch, nd.size))
                    bufs[n][0] = 0.0
            self._buffers = ((steps, batch), bufs)
        return bufs

    def _eval(self, nd, bufs, state, t0, t1) -> float:
        """Evaluate steps [t0, t1) of one node; returns the sum of the values written."""
        ins = [bufs[p.src][t0 + 1 - p.delay:t1 + 1 - p.delay] for p in nd.ports]
        return RULES[type(nd.op)][1](nd, ins, bufs[nd.name][t0 + 1:t1 + 1], state, self.threads)

    def _simulate(self, x, steps: int) -> tuple:
        """Run one batch chunk; returns (buffers, {node: sum of its values})."""
        batch = x.shape[0]
        bufs = self._alloc(steps, batch)
        inp = bufs[self.input]
        if self.nodes[self.input].static:
            inp[1:] = x.reshape(1, batch, -1)
        else:
            inp[1:] = x.reshape(batch, steps, -1).transpose(1, 0, 2)
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
                    bufs[nd.name][2:] = bufs[nd.name][1]
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
                trains[p].append(bufs[p][1:].astype(np.uint8).reshape(
                    timesteps, -1, *self.nodes[p].type.shape))
            outputs.append(time_sum(bufs[self.output][1:]))
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

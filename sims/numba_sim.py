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

The neuron update is compiled from :mod:`snncc.neuron` itself -- there is one definition.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import threading
import types as pytypes
from concurrent.futures import ThreadPoolExecutor

import networkx as nx
import numba
import numpy as np

from snncc import neuron as nrn
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, Readout
from snncc.ir.types import Kind
from snncc.runtime import RunResult, check_input

if __name__ not in ("snncc.sims.numba_sim", "__main__"):
    # numba's on-disk cache records the importing module's name; a second name for this file
    # (e.g. `sims.numba_sim` from the repository root) would leave entries the other cannot load
    raise ImportError(f"import this module as snncc.sims.numba_sim, not {__name__}")

_BUFFER_BUDGET = 256 << 20  # bytes of node buffers per batch chunk
_NEURON_BLOCK = 256  # neurons per task unit: long enough to vectorise
_PARALLEL_MIN_WORK = 1 << 20  # below this (~element operations) one thread is faster
_TASKS = 8  # tasks per thread and kernel call: small tasks even out uneven spike counts
_DENSITY = 8  # assumed 1/8 of synapse inputs nonzero when estimating work
_jit = numba.njit(cache=True, nogil=True)  # nogil: kernels run on the worker threads

# -- the neuron, compiled from its one definition -----------------------------------
_charge = numba.njit(nrn.charge)
_fire = numba.njit(nrn.fire)
_reset = numba.njit(nrn.reset)
# nrn.step calls charge/fire/reset by global name; numba can only call compiled
# functions, so compile step's own bytecode with those names bound to the jitted ones.
_step = numba.njit(pytypes.FunctionType(
    nrn.step.__code__, {"charge": _charge, "fire": _fire, "reset": _reset}, "step"))


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _total(a):
    """Sum of a 1-D array for the activity statistics, vectorised (any order is exact for
    spike counts; analog activity is a float statistic). Called on rows still in cache."""
    acc = 0.0
    for j in range(a.size):
        acc += a[j]
    return acc


@_jit
def _neuron_blocks(k0, k1, cur, v, out, leaky, inv_tau, v_th, v_reset, v_rest, soft):
    """All steps of neuron blocks k0:k1, block k = neurons [k % nblk] of sample k // nblk.
    cur, out: (steps, B, N); v: (B, N) membrane state, updated in place. Returns #spikes."""
    n = cur.shape[2]
    nblk = (n + _NEURON_BLOCK - 1) // _NEURON_BLOCK
    total = 0.0
    for k in range(k0, k1):
        b, j0 = k // nblk, (k % nblk) * _NEURON_BLOCK
        j1 = min(n, j0 + _NEURON_BLOCK)
        vb = v[b, j0:j1]
        for t in range(cur.shape[0]):
            cu, ou = cur[t, b, j0:j1], out[t, b, j0:j1]
            for j in range(vb.size):  # 0-based 1-D views: this loop vectorises
                s, vb[j] = _step(vb[j], cu[j], leaky, inv_tau, v_th, v_reset, v_rest, soft)
                ou[j] = s
            total += _total(ou)
    return total


# -- event-driven synapses ----------------------------------------------------------
@_jit
def _events(row, idx):
    """Compact the nonzero entries of one input row into idx; returns their number."""
    m = 0
    for k in range(row.size):  # branch-free: spikes are too irregular to predict
        idx[m] = k
        m += row[k] != 0.0
    return m


@_jit
def _fan_out(o, xrow, idx, m, w_t, c0, c1):
    """o += xrow[k] * w_t[k, c0:c1] for each event k, in event order (o: a row's c0:c1).
    Four events share one pass over o: the sums are still formed left to right
    (bit-identical to one event at a time) with a quarter of o's loads and stores.
    Loops run over 0-based slices: with a runtime start offset LLVM vectorises badly."""
    q = 0
    while q + 4 <= m:
        ka, kb, kc, kd = idx[q], idx[q + 1], idx[q + 2], idx[q + 3]
        a, b, c, d = w_t[ka, c0:c1], w_t[kb, c0:c1], w_t[kc, c0:c1], w_t[kd, c0:c1]
        xa, xb, xc, xd = xrow[ka], xrow[kb], xrow[kc], xrow[kd]
        for j in range(o.size):
            o[j] = o[j] + xa * a[j] + xb * b[j] + xc * c[j] + xd * d[j]
        q += 4
    while q < m:
        a = w_t[idx[q], c0:c1]
        xa = xrow[idx[q]]
        for j in range(o.size):
            o[j] = o[j] + xa * a[j]
        q += 1


@_jit
def _dense_tile(r0, r1, c0, c1, x, w_t, bias, out):
    """Rows r0:r1, output columns c0:c1 of a Dense. x: (R, n_in); w_t: (n_in, n_out), so
    an event adds one contiguous row; out: (R, n_out). Returns the sum of the tile."""
    idx = np.empty(x.shape[1], np.int64)
    total = 0.0
    for r in range(r0, r1):
        m = _events(x[r], idx)
        o = out[r, c0:c1]
        o[:] = bias[c0:c1]
        _fan_out(o, x[r], idx, m, w_t, c0, c1)
        total += _total(o)
    return total


@_jit
def _conv_rows(r0, r1, x, w_t, bias, out, h, w, ho, wo, sh, sw, ph, pw):
    """Samples r0:r1 of a conv. x: (R, C_in*H*W), out: (R, C_out*Ho*Wo) channel-first;
    w_t: (C_in, kh, kw, C_out). Events scatter into acc (Ho, Wo, C_out), channels last so
    an event adds a contiguous C_out vector per kernel tap. Returns the sum of out[r0:r1]."""
    kh, kw, c_out = w_t.shape[1], w_t.shape[2], w_t.shape[3]
    acc = np.empty((ho, wo, c_out))
    idx = np.empty(x.shape[1], np.int64)
    total = 0.0
    for r in range(r0, r1):
        acc[:, :] = bias
        xrow = x[r]
        for q in range(_events(xrow, idx)):
            k = idx[q]
            c, ci, y, xx = xrow[k], k // (h * w), (k // w) % h, k % w
            for ky in range(kh):
                oy = y + ph - ky  # output row whose window puts tap ky on input row y
                if oy < 0 or oy % sh != 0 or oy // sh >= ho:
                    continue
                for kx in range(kw):
                    ox = xx + pw - kx
                    if ox < 0 or ox % sw != 0 or ox // sw >= wo:
                        continue
                    a, wv = acc[oy // sh, ox // sw], w_t[ci, ky, kx]
                    for co in range(c_out):
                        a[co] = a[co] + c * wv[co]
        for co in range(c_out):
            for oy in range(ho):
                for ox in range(wo):
                    out[r, (co * ho + oy) * wo + ox] = acc[oy, ox, co]
        total += _total(out[r])
    return total


@_jit
def _pool(x, out, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, mode):
    """x: (R, C*H*W), out: (R, C*Ho*Wo). mode 0: max over in-bounds taps (padding
    ignored); 1: avg (sum / kh*kw, padding counted); 2: sum (exact counts).
    Serial: pooling is cheap next to the synapses around it. Returns the sum of out."""
    kk = float(kh * kw)
    for r in range(x.shape[0]):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    best, total = -np.inf, 0.0
                    for ky in range(kh):
                        iy = oy * sh - ph + ky
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - pw + kx
                            if 0 <= ix < w:
                                v = x[r, (ch * h + iy) * w + ix]
                                best = max(best, v)
                                total += v
                    out[r, (ch * ho + oy) * wo + ox] = best if mode == 0 else (
                        total / kk if mode == 1 else total)
    return _total(out.ravel())


@_jit
def _time_sum(x):
    """Sum of x[0], x[1], ... in step order (the reference accumulates its readout so)."""
    acc = x[0].copy()
    for t in range(1, x.shape[0]):
        acc += x[t]
    return acc


def _guard_stale_cache():
    """Numba invalidates a cached kernel only when *this* file changes, but
    _neuron_blocks inlines snncc/neuron.py: drop its cache when that source changes."""
    path = getattr(getattr(_neuron_blocks, "_cache", None), "_cache_path", None)
    if not path or not os.path.isdir(path):
        return
    digest = hashlib.sha256(inspect.getsource(nrn).encode()).hexdigest()
    stamp = os.path.join(path, "numba_sim.neuron.sha256")
    try:
        with open(stamp) as f:
            if f.read() == digest:
                return
    except OSError:
        pass
    _neuron_blocks._cache.flush()
    try:
        with open(stamp, "w") as f:
            f.write(digest)
    except OSError:
        pass


_guard_stale_cache()


# -- threads ------------------------------------------------------------------------
# Kernels are serial nogil functions over a task range, shared out to a thread pool.
# Not numba.prange: a prange loop calling these helpers took ~10x longer to compile
# (12 s vs 1 s for the conv), and its static fork/join stalls for a whole scheduler
# slice when another process holds a core. Here the calling thread takes tasks too,
# and a worker that has not started by the time the work is done is simply cancelled.
_THREADS = max(1, numba.config.NUMBA_NUM_THREADS)
_EXECUTOR = ThreadPoolExecutor(_THREADS - 1, "snncc-sim") if _THREADS > 1 else None  # lazy threads


def _share(kernel, ranges, args, work: int) -> float:
    """sum(kernel(*r, *args) for r in ranges), on several threads when the work is large."""
    calls = [r + args for r in ranges]
    results = [0.0] * len(calls)
    if _THREADS == 1 or len(calls) == 1 or work < _PARALLEL_MIN_WORK:
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

    helpers = [_EXECUTOR.submit(worker) for _ in range(_THREADS - 1)]
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


def _eval_dense(node, ins, out, state):
    """Tiles: a few row chunks per thread so uneven spike counts balance out; column
    blocks too when there are few rows (one sample stepped time-major)."""
    x, o = _rows(ins[0]), _rows(out)
    rows, n_out = o.shape
    if rows >= 2 * _THREADS:
        tiles = [r + (0, n_out) for r in _ranges(rows, _TASKS * _THREADS)]
    else:
        cols = _ranges(n_out, min(2 * _THREADS, n_out // 64))
        tiles = [(r, r + 1) + c for r in range(rows) for c in cols]
    return _share(_dense_tile, tiles, (x, node.data["w_t"], node.data["bias"], o),
                  x.size * (1 + n_out // _DENSITY))


def _prep_conv(op, tin, tout):
    dims = (*tin.shape[1:], *tout.shape[1:], *op.stride, *op.padding)
    return {"w_t": _weights(np.asarray(op.weight).transpose(1, 2, 3, 0)), "bias": _f64(op.bias, tout.shape[0]),
            "dims": tuple(int(d) for d in dims)}


def _eval_conv(node, ins, out, state):
    d = node.data
    x = _rows(ins[0])
    work = x.size * (1 + d["w_t"][0].size // _DENSITY)  # kh * kw * C_out adds per event
    return _share(_conv_rows, _ranges(x.shape[0], _TASKS * _THREADS),
                  (x, d["w_t"], d["bias"], _rows(out), *d["dims"]), work)


def _prep_pool(op, tin, tout):
    dims = (*tin.shape, *tout.shape[1:], *op.kernel, *op.stride, *op.padding)
    return {"args": tuple(int(d) for d in dims) + ({"max": 0, "avg": 1, "sum": 2}[op.mode],)}


def _eval_pool(node, ins, out, state):
    return _pool(_rows(ins[0]), _rows(out), *node.data["args"])


def _prep_neuron(op, tin, tout):
    leaky, inv_tau, v_th, v_reset, v_rest, soft = op.params.scalars()
    data = {"params": (int(leaky), float(inv_tau), float(v_th), float(v_reset), float(v_rest), int(soft)),
            "v0": v_rest}
    if op.heterogeneous or op.current_based:  # per-neuron parameters and/or a synaptic current
        p = {k: np.ascontiguousarray(a, np.float64).reshape(-1) for k, a in op.per_neuron(tout.shape).items()}
        inv = 1.0 / p["tau"] if leaky else np.ones_like(p["tau"])
        data["v0"] = p["v_rest"]
        data["arrays"] = (int(leaky), inv, p["v_th"], p["v_reset"], p["v_rest"], int(soft),
                          int(op.current_based), 1.0 / p["tau_syn"])
    return data


_synapse = numba.njit(nrn.synapse)


@numba.njit(nogil=True)  # not cached: it inlines snncc/neuron.py, whose changes numba's cache would not see
def _neuron_arrays(cur, v, isyn, out, leaky, inv_tau, v_th, v_reset, v_rest, soft, cuba, inv_tau_syn):
    """All steps of a population with per-neuron parameters and/or a CUBA synaptic current
    (same functions as _neuron_blocks, per-neuron arguments). Returns #spikes."""
    total = 0.0
    for b in range(cur.shape[1]):
        for t in range(cur.shape[0]):
            for j in range(cur.shape[2]):
                x = cur[t, b, j]
                if cuba:
                    isyn[b, j] = _synapse(isyn[b, j], x, inv_tau_syn[j])
                    x = isyn[b, j]
                s, v[b, j] = _step(v[b, j], x, leaky, inv_tau[j], v_th[j], v_reset[j], v_rest[j], soft)
                out[t, b, j] = s
                total += s
    return total


def _summed(ins):
    """Element-wise sum in port order, as the reference forms it."""
    if len(ins) == 1:
        return ins[0]
    total = ins[0] + ins[1]
    for x in ins[2:]:
        total += x
    return total


def _eval_neuron(node, ins, out, state):
    if "arrays" in node.data:
        v = state[node.name]
        isyn = state.setdefault((node.name, "i"), np.zeros_like(v))
        return _neuron_arrays(np.ascontiguousarray(_summed(ins)), v, isyn, out, *node.data["arrays"])
    blocks = out.shape[1] * -(-out.shape[2] // _NEURON_BLOCK)
    return _share(_neuron_blocks, _ranges(blocks, _TASKS * _THREADS),
                  (_summed(ins), state[node.name], out, *node.data["params"]), 4 * out.size)


def _prep_integrator(op, tin, tout):
    leaky, inv_tau, _, _, v_rest, _ = op.params.scalars()
    return {"p": (leaky, inv_tau, v_rest, op.params.current_based, 1.0 / op.params.tau_syn)}


def _eval_integrator(node, ins, out, state):
    """A non-spiking population: the neuron's charge (and synapse) per step, vectorised over neurons."""
    leaky, inv_tau, v_rest, cuba, inv_tau_syn = node.data["p"]
    cur = _summed(ins)
    v = state.setdefault((node.name, "v"), np.full(cur.shape[1:], v_rest))
    i = state.setdefault((node.name, "i"), np.zeros(cur.shape[1:]))
    for t in range(cur.shape[0]):
        x = cur[t]
        if cuba:
            i[...] = nrn.synapse(i, x, inv_tau_syn)
            x = i
        v[...] = nrn.charge(v, x, leaky, inv_tau, v_rest)
        out[t] = v
    return float(out.sum())


def _eval_sum(node, ins, out, state):  # Add; Flatten / Readout on a delayed edge (copy)
    out[...] = _summed(ins)
    return float(out.sum())


def _no_prep(op, tin, tout):
    return {}


_RULES = {  # op class: (prepare(op, in_type, out_type) -> data, evaluate)
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
        self.alias = isinstance(op, (Flatten, Readout)) and ports[0].delay == 0


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
    ``Plan(graph).run(x, T)`` is what :func:`run` does."""

    def __init__(self, graph: SpikeGraph):
        self.graph = graph
        types = graph.infer()
        self.order = graph.order()
        self.nodes = {}
        for n in self.order:
            op = graph.op(n)
            if type(op) not in _RULES:
                raise NotImplementedError(f"numba simulator has no rule for op {type(op).__name__} ({n})")
            ports = graph.inputs(n)
            tin = types[ports[0].src] if ports else None
            self.nodes[n] = _Node(n, op, ports, types[n], _RULES[type(op)][0](op, tin, types[n]))
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
            if node.ports and not isinstance(node.op, (Neuron, Integrator, Readout)):
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
        return _RULES[type(nd.op)][1](nd, ins, bufs[nd.name][t0 + 1:t1 + 1], state)

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
                 for n, nd in self.nodes.items() if isinstance(nd.op, Neuron)}
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
            outputs.append(_time_sum(bufs[self.output][1:]))
        output = np.concatenate(outputs).reshape(batch, *self.nodes[self.output].type.shape)
        if self.nodes[self.output].op.mode == "mean":
            output = output / timesteps
        return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                         trains={p: np.concatenate(v, axis=1) for p, v in trains.items()})


def run(graph: SpikeGraph, x, timesteps: int, record: bool = False) -> RunResult:
    return Plan(graph).run(x, timesteps, record)

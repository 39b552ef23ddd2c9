"""Event-driven Numba simulator for SpikeGraphs (same semantics as the torch reference).

Synapses are event driven: a Dense or Conv scans its input for nonzero entries and adds
``value * weights`` of each one (a weight row / a kernel footprint) into the output
current, so the work is proportional to the number of spikes, not to the layer size.

Evaluation order. Outside recurrent loops a node's T steps depend only on its inputs'
T steps (a synapse is stateless, a neuron carries its state along t), so each such node
is evaluated once for all T steps and all samples ("node-major"): one parallel kernel call
per node instead of one per step. Nodes on a cycle through a delayed edge are stepped
time-major, one call per node per step.

Storage. Every node's values live in a (T+1, B, size) float64 buffer whose row 0 is
zeros: the value at step t is row t+1 and a delay-1 edge reads row t, so delayed reads
(zeros at t=0) need no copies.

The neuron update is compiled from :mod:`snncc.neuron` itself -- there is one definition.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import types as pytypes

import networkx as nx
import numba
import numpy as np

from snncc import neuron as nrn
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.ir.types import Kind
from snncc.runtime import RunResult, check_input

_BUFFER_BUDGET = 256 << 20  # bytes of node buffers per batch chunk
_NEURON_BLOCK = 256  # neurons per parallel task: long enough to vectorise
_PARALLEL_MIN_WORK = 1 << 20  # see _launch
_DENSITY = 8  # assumed 1/8 of synapse inputs nonzero when estimating work

# -- the neuron, compiled from its one definition -----------------------------------
_charge = numba.njit(nrn.charge)
_fire = numba.njit(nrn.fire)
_reset = numba.njit(nrn.reset)
# nrn.step calls charge/fire/reset by global name; numba can only call compiled
# functions, so compile step's own bytecode with those names bound to the jitted ones.
_step = numba.njit(pytypes.FunctionType(
    nrn.step.__code__, {"charge": _charge, "fire": _fire, "reset": _reset}, "step"))


@numba.njit(cache=True, fastmath={"reassoc", "nsz"})
def _total(a):
    """Sum of a 1-D array for the activity statistics, vectorised (any order is exact for
    spike counts; analog activity is a float statistic). Called on rows still in cache."""
    acc = 0.0
    for j in range(a.size):
        acc += a[j]
    return acc


@numba.njit(cache=True)
def _neuron_block(cur, v, out, b, j0, j1, leaky, inv_tau, v_th, v_reset, v_rest, soft):
    """All steps of neurons j0:j1 of sample b. Returns their number of spikes."""
    total = 0.0
    vb = v[b, j0:j1]
    for t in range(cur.shape[0]):
        cu, ou = cur[t, b, j0:j1], out[t, b, j0:j1]
        for j in range(vb.size):  # 0-based 1-D views: this loop vectorises
            s, vb[j] = _step(vb[j], cu[j], leaky, inv_tau, v_th, v_reset, v_rest, soft)
            ou[j] = s
        total += _total(ou)
    return total


# Parallel kernels are thin prange loops over serial helpers: numba's parfor passes
# then see a small body, which keeps their (cached, but first-run) compile time down.
@numba.njit(parallel=True, cache=True)
def _neuron_steps(cur, v, out, leaky, inv_tau, v_th, v_reset, v_rest, soft):
    """cur, out: (steps, B, N); v: (B, N) membrane state, updated in place.
    Returns the number of spikes."""
    n = cur.shape[2]
    nblk = (n + _NEURON_BLOCK - 1) // _NEURON_BLOCK
    total = 0.0
    for task in numba.prange(cur.shape[1] * nblk):
        b, j0 = task // nblk, (task % nblk) * _NEURON_BLOCK
        total += _neuron_block(cur, v, out, b, j0, min(n, j0 + _NEURON_BLOCK),
                               leaky, inv_tau, v_th, v_reset, v_rest, soft)
    return total


# -- event-driven synapses ----------------------------------------------------------
@numba.njit(cache=True)
def _events(row, idx):
    """Compact the nonzero entries of one input row into idx; returns their number."""
    m = 0
    for k in range(row.size):  # branch-free: spikes are too irregular to predict
        idx[m] = k
        m += row[k] != 0.0
    return m


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _dense_tile(x, w_t, bias, out, r0, r1, c0, c1):
    """Rows r0:r1, output columns c0:c1 of a Dense. Returns the sum of that tile."""
    idx = np.empty(x.shape[1], np.int64)
    total = 0.0
    for r in range(r0, r1):
        m = _events(x[r], idx)
        o = out[r, c0:c1]
        o[:] = bias[c0:c1]
        _fan_out(o, x[r], idx, m, w_t, c0, c1)
        total += _total(o)
    return total


@numba.njit(parallel=True, cache=True)
def _dense_events(x, w_t, bias, out, row_chunks, col_blocks):
    """x: (R, n_in); w_t: (n_in, n_out) so an event adds one contiguous row; out: (R, n_out).
    Work is split into row chunks x column blocks (column blocks keep both cores busy
    when R is 1, e.g. one sample stepped time-major). Returns the sum of out."""
    rows, n_out = x.shape[0], w_t.shape[1]
    total = 0.0
    for task in numba.prange(row_chunks * col_blocks):
        rc, cb = task // col_blocks, task % col_blocks
        total += _dense_tile(x, w_t, bias, out, rc * rows // row_chunks, (rc + 1) * rows // row_chunks,
                             cb * n_out // col_blocks, (cb + 1) * n_out // col_blocks)
    return total


@numba.njit(cache=True)
def _conv_row(xrow, w_t, bias, orow, h, w, ho, wo, sh, sw, ph, pw):
    """One sample's conv: scatter each input event into acc (Ho, Wo, C_out), channels
    last so an event adds a contiguous C_out vector per kernel tap, then write orow in
    the IR's channel-first order. w_t: (C_in, kh, kw, C_out). Returns the sum of orow."""
    kh, kw, c_out = w_t.shape[1], w_t.shape[2], w_t.shape[3]
    acc = np.empty((ho, wo, c_out))
    acc[:, :] = bias
    idx = np.empty(xrow.size, np.int64)
    for q in range(_events(xrow, idx)):
        k = idx[q]
        c = xrow[k]
        ci, y, xx = k // (h * w), (k // w) % h, k % w
        for ky in range(kh):
            oy = y + ph - ky  # output row whose window puts tap ky on input row y
            if oy < 0 or oy % sh != 0 or oy // sh >= ho:
                continue
            for kx in range(kw):
                ox = xx + pw - kx
                if ox < 0 or ox % sw != 0 or ox // sw >= wo:
                    continue
                a = acc[oy // sh, ox // sw]
                wv = w_t[ci, ky, kx]
                for co in range(c_out):
                    a[co] = a[co] + c * wv[co]
    for co in range(c_out):
        for oy in range(ho):
            for ox in range(wo):
                orow[(co * ho + oy) * wo + ox] = acc[oy, ox, co]
    return _total(orow)


@numba.njit(parallel=True, cache=True)
def _conv_events(x, w_t, bias, out, h, w, ho, wo, sh, sw, ph, pw):
    """x: (R, C_in*H*W), out: (R, C_out*Ho*Wo). Returns the sum of out."""
    total = 0.0
    for r in numba.prange(x.shape[0]):
        total += _conv_row(x[r], w_t, bias, out[r], h, w, ho, wo, sh, sw, ph, pw)
    return total


@numba.njit(cache=True)
def _pool(x, out, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, mode):
    """x: (R, C*H*W), out: (R, C*Ho*Wo). mode 0: max over in-bounds taps (padding
    ignored); 1: avg (sum / kh*kw, padding counted); 2: sum, computed as avg * kh*kw
    because the reference does so (7/25*25 != 7 in float64): counts agree bit for bit.
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
                        total / kk if mode == 1 else total / kk * kk)
    return _total(out.ravel())


@numba.njit(cache=True)
def _time_sum(x):
    """Sum of x[0], x[1], ... in step order (the reference accumulates its readout so)."""
    acc = x[0].copy()
    for t in range(1, x.shape[0]):
        acc += x[t]
    return acc


def _guard_stale_cache():
    """Numba invalidates a cached kernel only when *this* file changes, but
    _neuron_steps inlines snncc/neuron.py: drop its cache when that source changes."""
    cache = getattr(_neuron_steps, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    if not path or not os.path.isdir(path):
        return
    digest = hashlib.sha256(inspect.getsource(nrn).encode()).hexdigest()
    stamp = os.path.join(path, "numba_sim.neuron.sha256")
    try:
        with open(stamp) as f:
            fresh = f.read() == digest
    except OSError:
        fresh = False
    if not fresh:
        cache.flush()
        try:
            with open(stamp, "w") as f:
                f.write(digest)
        except OSError:
            pass


_guard_stale_cache()


# -- per-op rules: evaluate steps [t0, t1) given input views (steps, B, size) ----------
def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _launch(kernel, work: int, *args):
    """Call a parallel kernel, single-threaded when its work (~ element operations) is
    too small to pay for a fork/join: tens of microseconds on an idle machine, and up to
    a scheduler time slice when another process holds the other core."""
    threads = numba.get_num_threads()
    if work >= _PARALLEL_MIN_WORK or threads == 1:
        return kernel(*args)
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def _split(rows: int, n_out: int) -> tuple:
    """(row chunks, column blocks) for a synapse call: a few tasks per thread so uneven
    spike counts balance out; split columns only when there are too few rows."""
    threads = numba.get_num_threads()
    if rows >= 2 * threads:
        return min(rows, 4 * threads), 1
    return rows, max(1, min(2 * threads, n_out // 64))


def _prep_dense(op, tin, tout):
    bias = np.zeros(tout.shape[0]) if op.bias is None else np.asarray(op.bias, np.float64)
    return {"w_t": np.ascontiguousarray(np.asarray(op.weight, np.float64).T), "bias": bias}


def _eval_dense(node, ins, out, state):
    x, o = _rows(ins[0]), _rows(out)
    return _launch(_dense_events, x.size * (1 + o.shape[1] // _DENSITY),
            x, node.data["w_t"], node.data["bias"], o, *_split(x.shape[0], o.shape[1]))


def _prep_conv(op, tin, tout):
    w = np.asarray(op.weight, np.float64)
    bias = np.zeros(w.shape[0]) if op.bias is None else np.asarray(op.bias, np.float64)
    dims = (*tin.shape[1:], *tout.shape[1:], *op.stride, *op.padding)
    return {"w_t": np.ascontiguousarray(w.transpose(1, 2, 3, 0)), "bias": bias,
            "dims": tuple(int(d) for d in dims)}


def _eval_conv(node, ins, out, state):
    d = node.data
    fan = d["w_t"][0].size  # kh * kw * C_out adds per input event
    return _launch(_conv_events, ins[0].size * (1 + fan // _DENSITY),
            _rows(ins[0]), d["w_t"], d["bias"], _rows(out), *d["dims"])


def _prep_pool(op, tin, tout):
    dims = (*tin.shape, *tout.shape[1:], *op.kernel, *op.stride, *op.padding)
    return {"args": tuple(int(d) for d in dims) + ({"max": 0, "avg": 1, "sum": 2}[op.mode],)}


def _eval_pool(node, ins, out, state):
    return _pool(_rows(ins[0]), _rows(out), *node.data["args"])


def _prep_neuron(op, tin, tout):
    leaky, inv_tau, v_th, v_reset, v_rest, soft = op.params.scalars()
    return {"params": (int(leaky), float(inv_tau), float(v_th), float(v_reset), float(v_rest),
                       int(soft))}


def _summed(ins):
    """Element-wise sum in port order, as the reference forms it."""
    if len(ins) == 1:
        return ins[0]
    total = ins[0] + ins[1]
    for x in ins[2:]:
        total += x
    return total


def _eval_neuron(node, ins, out, state):
    return _launch(_neuron_steps, 2 * out.size, _summed(ins), state[node.name], out, *node.data["params"])


def _eval_add(node, ins, out, state):
    out[...] = _summed(ins)
    return float(out.sum())


def _eval_copy(node, ins, out, state):  # Flatten / Readout on a delayed edge
    out[...] = ins[0]
    return float(out.sum())


def _no_prep(op, tin, tout):
    return {}


_RULES = {
    Dense: (_prep_dense, _eval_dense),
    Conv: (_prep_conv, _eval_conv),
    Pool: (_prep_pool, _eval_pool),
    Neuron: (_prep_neuron, _eval_neuron),
    Add: (_no_prep, _eval_add),
    Flatten: (_no_prep, _eval_copy),
    Readout: (_no_prep, _eval_copy),
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
    and reusable buffers. ``Plan(graph).run(x, T)`` is what :func:`run` does."""

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
        (self.input,) = graph.input_nodes
        (self.output,) = graph.output_nodes
        self._mark_static(types[self.input].kind is Kind.ANALOG)
        self.schedule = _schedule(graph, self.order)
        self._buffers = (None, {})

    def _mark_static(self, direct: bool):
        """Same rule as the reference: values fed only by a direct-encoded input never
        change, so they are computed once (then copied to every step)."""
        self.nodes[self.input].static = direct
        for node in self.nodes.values():
            if node.ports and not isinstance(node.op, (Neuron, Readout)):
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
        state = {n: np.full((batch, nd.size), nd.data["params"][4])
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
        outputs, trains = [], {p: [] for p in self.graph.populations()} if record else {}
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

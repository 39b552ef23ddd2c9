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

# -- the neuron, compiled from its one definition -----------------------------------
_charge = numba.njit(nrn.charge)
_fire = numba.njit(nrn.fire)
_reset = numba.njit(nrn.reset)
# nrn.step calls charge/fire/reset by global name; numba can only call compiled
# functions, so compile step's own bytecode with those names bound to the jitted ones.
_step = numba.njit(pytypes.FunctionType(
    nrn.step.__code__, {"charge": _charge, "fire": _fire, "reset": _reset}, "step"))


@numba.njit(parallel=True, cache=True)
def _neuron_steps(cur, v, out, leaky, inv_tau, v_th, v_reset, v_rest, soft):
    """cur, out: (steps, B, N); v: (B, N) membrane state, updated in place."""
    steps, batch, n = cur.shape
    nblk = (n + _NEURON_BLOCK - 1) // _NEURON_BLOCK
    for task in numba.prange(batch * nblk):
        b = task // nblk
        j0 = (task % nblk) * _NEURON_BLOCK
        j1 = min(n, j0 + _NEURON_BLOCK)
        for t in range(steps):
            for j in range(j0, j1):
                s, vn = _step(v[b, j], cur[t, b, j], leaky, inv_tau, v_th, v_reset, v_rest, soft)
                v[b, j] = vn
                out[t, b, j] = s


# -- event-driven synapses ----------------------------------------------------------
@numba.njit(cache=True)
def _events(row, idx):
    """Compact the nonzero entries of one input row into idx; returns their number."""
    m = 0
    for k in range(row.size):
        if row[k] != 0.0:
            idx[m] = k
            m += 1
    return m


@numba.njit(cache=True)
def _fan_out(orow, xrow, idx, m, w_t, c0, c1):
    """orow[c0:c1] += xrow[k] * w_t[k, c0:c1] for each event k, in event order.
    Four events share one pass over orow: the sums are still formed left to right
    (bit-identical to one event at a time) with a quarter of orow's loads and stores."""
    q = 0
    while q + 4 <= m:
        ka, kb, kc, kd = idx[q], idx[q + 1], idx[q + 2], idx[q + 3]
        a, b, c, d = w_t[ka], w_t[kb], w_t[kc], w_t[kd]
        xa, xb, xc, xd = xrow[ka], xrow[kb], xrow[kc], xrow[kd]
        for j in range(c0, c1):
            orow[j] = orow[j] + xa * a[j] + xb * b[j] + xc * c[j] + xd * d[j]
        q += 4
    while q < m:
        a = w_t[idx[q]]
        xa = xrow[idx[q]]
        for j in range(c0, c1):
            orow[j] = orow[j] + xa * a[j]
        q += 1


@numba.njit(parallel=True, cache=True)
def _dense_events(x, w_t, bias, out, row_chunks, col_blocks):
    """x: (R, n_in); w_t: (n_in, n_out) so an event adds one contiguous row; out: (R, n_out).
    Work is split into row chunks x column blocks (column blocks keep both cores busy
    when R is 1, e.g. one sample stepped time-major)."""
    rows, n_in = x.shape
    n_out = w_t.shape[1]
    for task in numba.prange(row_chunks * col_blocks):
        rc, cb = task // col_blocks, task % col_blocks
        c0, c1 = cb * n_out // col_blocks, (cb + 1) * n_out // col_blocks
        idx = np.empty(n_in, np.int64)
        for r in range(rc * rows // row_chunks, (rc + 1) * rows // row_chunks):
            m = _events(x[r], idx)
            orow = out[r]
            orow[c0:c1] = bias[c0:c1]
            _fan_out(orow, x[r], idx, m, w_t, c0, c1)


@numba.njit(cache=True)
def _conv_scatter_row(xrow, w_t, bias, acc, idx, h, w, sh, sw, ph, pw):
    """Scatter one sample's input events into acc (Ho, Wo, C_out), channels last so that
    each event adds a contiguous C_out vector per kernel tap. w_t: (C_in, kh, kw, C_out)."""
    kh, kw = w_t.shape[1], w_t.shape[2]
    ho, wo = acc.shape[0], acc.shape[1]
    acc[:, :] = bias
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
                for co in range(a.size):
                    a[co] = a[co] + c * wv[co]


@numba.njit(parallel=True, cache=True)
def _conv_events(x, w_t, bias, out, h, w, ho, wo, sh, sw, ph, pw):
    """x: (R, C_in*H*W), out: (R, C_out*Ho*Wo), both channel-first like the IR."""
    rows, n_in = x.shape
    c_out = w_t.shape[3]
    for r in numba.prange(rows):
        acc = np.empty((ho, wo, c_out))
        _conv_scatter_row(x[r], w_t, bias, acc, np.empty(n_in, np.int64), h, w, sh, sw, ph, pw)
        for co in range(c_out):  # back to channel-first order
            for oy in range(ho):
                for ox in range(wo):
                    out[r, (co * ho + oy) * wo + ox] = acc[oy, ox, co]


@numba.njit(parallel=True, cache=True)
def _pool(x, out, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, mode):
    """mode 0: max over in-bounds taps (padding ignored); 1: avg (sum / kh*kw, padding
    counted); 2: sum, computed as avg * kh*kw because that is what the reference does
    (e.g. 7/25*25 != 7 in float64), so counts agree bit for bit."""
    kk = float(kh * kw)
    for r in numba.prange(x.shape[0]):
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

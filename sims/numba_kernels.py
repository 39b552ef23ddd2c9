"""The simulator's compiled kernels (numba, cached on disk): the neuron update compiled from
:mod:`snncc.neuron` itself (one definition), event-driven Dense / Conv synapses, pooling.
Serial nogil functions over a task range; :mod:`snncc.sims.numba_sim` shares them out to
threads. Nothing runs at import: :func:`check_cache_once` does the stale-cache file check on
the simulator's first plan."""
from __future__ import annotations

import hashlib
import inspect
import os
import types as pytypes

import numba
import numpy as np

from snncc import neuron as nrn

if __name__ not in ("snncc.sims.numba_kernels", "__main__"):
    # numba's on-disk cache records the importing module's name; a second name for this file
    # (e.g. `sims.numba_kernels` from the repository root) would leave entries the other cannot load
    raise ImportError(f"import this module as snncc.sims.numba_kernels, not {__name__}")

__all__ = ["NEURON_BLOCK", "charge", "fire", "reset", "step", "synapse", "vector_sum", "neuron_blocks",
           "neuron_arrays", "dense_tile",
           "conv_tap", "conv_src", "conv_rows", "channels_first", "conv_events", "im2col", "nonzero_share", "pool",
           "time_sum", "check_cache_once"]

NEURON_BLOCK = 256  # neurons per task unit: long enough to vectorise
_jit = numba.njit(cache=True, nogil=True)  # nogil: kernels run on the worker threads

# -- the neuron, compiled from its one definition -----------------------------------
charge = numba.njit(nrn.charge)
fire = numba.njit(nrn.fire)
reset = numba.njit(nrn.reset)
# nrn.step calls charge/fire/reset by global name; numba can only call compiled
# functions, so compile step's own bytecode with those names bound to the jitted ones.
step = numba.njit(pytypes.FunctionType(
    nrn.step.__code__, {"charge": charge, "fire": fire, "reset": reset}, "step"))
synapse = numba.njit(nrn.synapse)


@numba.njit(nogil=True)  # not cached: populations with per-neuron parameters are rare; compiled on first use
def neuron_arrays(cur, v, isyn, out, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input, cuba, inv_tau_syn):
    """All steps of a population with per-neuron parameters and/or a CUBA synaptic current
    (the same functions as neuron_blocks, per-neuron arguments). Returns #spikes."""
    total = 0.0
    for b in range(cur.shape[1]):
        for t in range(cur.shape[0]):
            for j in range(cur.shape[2]):
                x = cur[t, b, j]
                if cuba:
                    isyn[b, j] = synapse(isyn[b, j], x, inv_tau_syn[j])
                    x = isyn[b, j]
                s, v[b, j] = step(v[b, j], x, leaky, inv_tau[j], v_th[j], v_reset[j], v_rest[j], soft, decay_input)
                out[t, b, j] = s
                total += s
    return total


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def vector_sum(a):
    """Sum of a 1-D array for the activity statistics, vectorised (any order is exact for
    spike counts; analog activity is a float statistic). Called on rows still in cache."""
    acc = 0.0
    for j in range(a.size):
        acc += a[j]
    return acc


@_jit
def neuron_blocks(k0, k1, cur, v, out, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input):
    """All steps of neuron blocks k0:k1, block k = neurons [k % nblk] of sample k // nblk.
    cur, out: (steps, B, N); v: (B, N) membrane state, updated in place. Returns #spikes."""
    n = cur.shape[2]
    nblk = (n + NEURON_BLOCK - 1) // NEURON_BLOCK
    total = 0.0
    for k in range(k0, k1):
        b, j0 = k // nblk, (k % nblk) * NEURON_BLOCK
        j1 = min(n, j0 + NEURON_BLOCK)
        vb = v[b, j0:j1]
        for t in range(cur.shape[0]):
            cu, ou = cur[t, b, j0:j1], out[t, b, j0:j1]
            for j in range(vb.size):  # 0-based 1-D views: this loop vectorises
                s, vb[j] = step(vb[j], cu[j], leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input)
                ou[j] = s
            total += vector_sum(ou)
    return total


@_jit
def nonzero_share(flat, samples):
    """Share of nonzero entries among about ``samples`` evenly strided entries of a 1-D array."""
    step = max(1, flat.size // samples)
    hits = 0
    seen = 0
    for i in range(0, flat.size, step):
        hits += flat[i] != 0.0
        seen += 1
    return hits / max(1, seen)


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
def dense_tile(r0, r1, c0, c1, x, w_t, bias, out):
    """Rows r0:r1, output columns c0:c1 of a Dense. x: (R, n_in); w_t: (n_in, n_out), so
    an event adds one contiguous row; out: (R, n_out). Returns the sum of the tile."""
    idx = np.empty(x.shape[1], np.int64)
    total = 0.0
    for r in range(r0, r1):
        m = _events(x[r], idx)
        o = out[r, c0:c1]
        o[:] = bias[c0:c1]
        _fan_out(o, x[r], idx, m, w_t, c0, c1)
        total += vector_sum(o)
    return total


@_jit
def conv_tap(i, k, s, p, d, n):
    """The conv geometry, input to output: the output index (< n) whose window puts kernel tap k on
    input index i (stride s, padding p, dilation d), or -1 when there is none."""
    o = i + p - k * d
    if o < 0 or o % s != 0 or o // s >= n:
        return -1
    return o // s


@_jit
def conv_src(o, k, s, p, d, n):
    """The conv geometry, output to input: the input index (< n) under kernel tap k of output index o
    (stride s, padding p, dilation d), or -1 in the padding."""
    i = o * s - p + k * d
    return i if 0 <= i < n else -1


@_jit
def _fill_rows(acc, bias):
    """acc (n, c), channels last, = bias in every row (row views and a plain loop: a slice assignment
    per row costs three times as much, measured)."""
    for q in range(acc.shape[0]):
        row = acc[q]
        for j in range(bias.size):
            row[j] = bias[j]


@_jit
def channels_first(acc, dst):
    """dst (c * n, channel-first) = acc (n, c), channels last; returns the sum of dst (the activity statistic)."""
    n, c = acc.shape
    for co in range(c):
        for q in range(n):
            dst[co * n + q] = acc[q, co]
    return vector_sum(dst)


@_jit
def conv_rows(r0, r1, x, w_f, bias, out, h, w, ho, wo, sh, sw, ph, pw, dh, dw, c_grp):
    """Samples r0:r1 of a conv. x: (R, C_in*H*W), out: (R, C_out*Ho*Wo) channel-first;
    w_f: (C_in, kh, kw, C_out / groups) with kx reversed, an input channel's weights to the outputs
    of its group (c_grp input channels per group). Events scatter into acc (Ho, Wo, C_out), channels
    last: a C_out / groups run per kernel tap. Without groups and with stride and dilation 1 along x,
    the taps kx of one event land on consecutive output columns, and reversed kx makes their weights
    consecutive too: one contiguous add of up to kw * C_out values per kernel row. Each accumulator
    entry still receives one product per event, in event order (the sums do not depend on this
    layout). Returns the sum of out[r0:r1]."""
    kh, kw, c_og = w_f.shape[1], w_f.shape[2], w_f.shape[3]
    c_out = bias.size
    whole_rows = sw == 1 and dw == 1 and c_og == c_out
    acc2 = np.empty((ho * wo, c_out))  # channels last
    acc = acc2.reshape(acc2.size)
    wflat = w_f.reshape(w_f.size)
    idx = np.empty(x.shape[1], np.int64)
    total = 0.0
    for r in range(r0, r1):
        _fill_rows(acc2, bias)
        xrow = x[r]
        for q in range(_events(xrow, idx)):
            k = idx[q]
            c, ci, y, xx = xrow[k], k // (h * w), (k // w) % h, k % w
            g0 = (ci // c_grp) * c_og
            for ky in range(kh):
                oy = conv_tap(y, ky, sh, ph, dh, ho)
                if oy < 0:
                    continue
                row = oy * wo
                taps = ((ci * kh + ky) * kw) * c_og
                if whole_rows:  # kx in [lo, hi] lands on output columns xx + pw - hi ... xx + pw - lo
                    lo, hi = max(0, xx + pw - wo + 1), min(kw - 1, xx + pw)
                    if lo > hi:
                        continue
                    a = acc[(row + xx + pw - hi) * c_out:(row + xx + pw - lo + 1) * c_out]
                    wv = wflat[taps + (kw - 1 - hi) * c_out:taps + (kw - lo) * c_out]
                    for j in range(a.size):
                        a[j] = a[j] + c * wv[j]
                    continue
                for kx in range(kw):
                    ox = conv_tap(xx, kx, sw, pw, dw, wo)
                    if ox < 0:
                        continue
                    a = acc[(row + ox) * c_out + g0:(row + ox) * c_out + g0 + c_og]
                    wv = wflat[taps + (kw - 1 - kx) * c_og:taps + (kw - kx) * c_og]
                    for co in range(c_og):
                        a[co] = a[co] + c * wv[co]
        total += channels_first(acc2, out[r])
    return total


@_jit
def _gather(acc, xr, idx, q0, q1, p, hw, w_tap):
    """acc += x[k, p] * w_tap[k] for the active channels k = idx[p, q0:q1] of input pixel p, four at
    a time (left-to-right sums, as in :func:`_fan_out`)."""
    q = q0
    while q + 4 <= q1:
        ka, kb, kc, kd = idx[p, q], idx[p, q + 1], idx[p, q + 2], idx[p, q + 3]
        a, b, c, d = w_tap[ka], w_tap[kb], w_tap[kc], w_tap[kd]
        xa, xb, xc, xd = xr[ka * hw + p], xr[kb * hw + p], xr[kc * hw + p], xr[kd * hw + p]
        for j in range(acc.size):
            acc[j] = acc[j] + xa * a[j] + xb * b[j] + xc * c[j] + xd * d[j]
        q += 4
    while q < q1:
        k = idx[p, q]
        a = w_tap[k]
        xa = xr[k * hw + p]
        for j in range(acc.size):
            acc[j] = acc[j] + xa * a[j]
        q += 1


@_jit
def conv_events(r0, r1, x, w_g, bias, out, h, w, ho, wo, sh, sw, ph, pw, dh, dw, c_grp):
    """Samples r0:r1 of an event-driven conv. x: (R, C_in*H*W), out: (R, C_out*Ho*Wo) channel-first;
    w_g: (kh, kw, C_in, C_out / groups), an input channel's weights to the outputs of its group
    (c_grp input channels per group). The active channels of each input pixel are listed once, group
    by group; each output pixel then sums the weight vectors of the events under its kernel taps into
    its own accumulator row (channels last; in cache while it is summed), so the work is proportional
    to the events. Returns the sum of out[r0:r1]."""
    kh, kw, c_in, c_og = w_g.shape
    groups, hw = c_in // c_grp, h * w
    idx = np.empty((hw, c_in), np.int32)
    cnt = np.empty(hw, np.int32)
    ends = np.zeros((groups + 1, hw), np.int32)  # group g of pixel p: idx[p, ends[g, p]:ends[g + 1, p]]
    acc = np.empty((ho * wo, bias.size))
    total = 0.0
    for r in range(r0, r1):
        xr = x[r]
        cnt[:] = 0
        for g in range(groups):
            for ci in range(g * c_grp, (g + 1) * c_grp):  # branch-free compaction (as _events), x read contiguously
                for p in range(hw):
                    idx[p, cnt[p]] = ci
                    cnt[p] += xr[ci * hw + p] != 0.0
            ends[g + 1] = cnt
        _fill_rows(acc, bias)
        for oy in range(ho):
            for ox in range(wo):
                a = acc[oy * wo + ox]
                for ky in range(kh):
                    iy = conv_src(oy, ky, sh, ph, dh, h)
                    if iy < 0:
                        continue
                    for kx in range(kw):
                        ix = conv_src(ox, kx, sw, pw, dw, w)
                        if ix < 0:
                            continue
                        p = iy * w + ix
                        if groups == 1:  # the common case, without the group slices
                            _gather(a, xr, idx, 0, cnt[p], p, hw, w_g[ky, kx])
                            continue
                        for g in range(groups):
                            _gather(a[g * c_og:(g + 1) * c_og], xr, idx, ends[g, p], ends[g + 1, p], p, hw,
                                    w_g[ky, kx])
        total += channels_first(acc, out[r])
    return total


@_jit
def im2col(r0, r1, x, cols, kh, kw, h, w, ho, wo, sh, sw, ph, pw, dh, dw):
    """Unfold samples r0:r1 of x (R, C_in*H*W) into cols (R, C_in*kh*kw, Ho*Wo): row
    (ci, ky, kx) of a sample holds the input under that kernel tap at every output position
    (zero in the padding), so a conv is one matrix product per sample and group, channel-first
    (a group's rows are consecutive)."""
    c_in = cols.shape[1] // (kh * kw)
    for r in range(r0, r1):
        for ci in range(c_in):
            for ky in range(kh):
                for kx in range(kw):
                    row = cols[r, (ci * kh + ky) * kw + kx]
                    for oy in range(ho):
                        iy = conv_src(oy, ky, sh, ph, dh, h)
                        seg = row[oy * wo:(oy + 1) * wo]
                        if iy < 0:
                            seg[:] = 0.0
                            continue
                        src = x[r, (ci * h + iy) * w:(ci * h + iy + 1) * w]
                        for ox in range(wo):
                            ix = conv_src(ox, kx, sw, pw, dw, w)
                            seg[ox] = src[ix] if ix >= 0 else 0.0
    return 0.0


@_jit
def pool(x, out, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, mode):
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
    return vector_sum(out.ravel())


@_jit
def time_sum(x):
    """Sum of x[0], x[1], ... in step order (the reference accumulates its readout so)."""
    acc = x[0].copy()
    for t in range(1, x.shape[0]):
        acc += x[t]
    return acc


def _guard_stale_cache():
    """Numba invalidates a cached kernel only when *this* file changes, but
    neuron_blocks inlines snncc/neuron.py: drop its cache when that source changes."""
    path = getattr(getattr(neuron_blocks, "_cache", None), "_cache_path", None)
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
    neuron_blocks._cache.flush()
    try:
        with open(stamp, "w") as f:
            f.write(digest)
    except OSError:
        pass


_CACHE_CHECKED = False


def check_cache_once():
    global _CACHE_CHECKED
    if not _CACHE_CHECKED:
        _CACHE_CHECKED = True
        _guard_stale_cache()

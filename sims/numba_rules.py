"""The simulator's per-op rules: ``RULES[op class] = (prepare, evaluate)``.

``prepare(op, in_type, out_type) -> data`` runs once per :class:`~snncc.sims.numba_sim.Plan`
(weights in kernel layout); ``evaluate(node, ins, out, state, threads)`` computes steps
[t0, t1) of a node from its input views (steps, B, size) into ``out`` and returns the sum
of the values written.

Synapses choose their kernel per call from the measured density of their input (the share of
nonzero entries, estimated from a strided sample before the work): below a crossover an event-driven scatter (work
proportional to the events), above it a dense matrix product (numpy's BLAS; a conv unfolds
its input first, :func:`~snncc.sims.numba_kernels.im2col`). Both accumulate in float64, so
either kernel forms each current as a float64 sum of the same products, in another order
(as the reference's torch ops do too): see docs/methods.md, "Simulator kernels".
"""
from __future__ import annotations

import numpy as np

from snncc import neuron as nrn
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, PoolMode, Readout
from snncc.sims.numba_f32 import dense_f32, eval_checked, neuron_bound, record_conv
from snncc.sims.numba_torch32 import conv_product
from snncc.sims.numba_kernels import (NEURON_BLOCK, conv_events, conv_rows, dense_tile, im2col, neuron_arrays,
                                      neuron_blocks, nonzero_share, pool)
from snncc.sims.numba_threads import PARALLEL_MIN_WORK, TASKS, blas_one_thread, ranges, run_tasks, share

# The kernel choice, from measurements on cpu2 (quiet, one thread; docs/results.md section 2b). Dense:
# the float32-weight event kernel adds ~20 G products/s per core; numpy's float64 BLAS ~26 G plus reading
# its float64 weights (~15 GB/s), so the product only wins for dense inputs in many rows (rho > ~0.8 at
# 256 rows, > ~0.93 at 64, never at 16). Conv: im2col + BLAS wins near full density (12x for a
# 3-channel analog stem); of the two event-driven convs the scatter has the smaller fixed cost, the
# per-output gather (a fixed cost per output pixel and tap) the faster events: see conv_gather_wins.
EVENT_ADDS_PER_S = 20e9
BLAS_MACS_PER_S = 26e9
BLAS_BYTES_PER_S = 15e9
SGEMM_MACS_PER_S = 52e9  # float32 products (numba_f32): twice the float64 rate
CONV_MIN_DENSITY = 0.5
CONV_F32_MIN_DENSITY = 0.3  # float32 im2col + sgemm (binary inputs) vs the event convs: measured, see methods
CONV_F32_TORCH = True  # the float32 conv product by torch's direct conv where provably plain (numba_torch32)
CONV_GATHER_EVENTS = 48  # grouped convs: events per receptive field from which the gather wins
CONV_GATHER_PIXEL_EVENTS = 12  # whole-row scatter: events per input pixel (density x channels) where the gather wins
CONV_GATHER_DENSITY = 0.04  # other ungrouped convs (strided, dilated or 1-wide along x): input density
ASSUMED_DENSITY = 1 / 8  # for the threading decision where the density was not estimated
_COLS_BUDGET = 16 << 20  # bytes of unfolded conv input per chunk of samples


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


def density(x, samples: int = 4096) -> float:
    """Share of nonzero entries of x (what the event kernels would visit), estimated from an evenly
    strided sample of about ``samples`` entries: it only picks a kernel (counting all of x cost ~15 %
    of a small MLP's run), and every kernel gives the reference's spikes."""
    return nonzero_share(x.reshape(-1), samples)


# -- Dense ----------------------------------------------------------------------------
def _prep_dense(op, tin, tout):
    w = np.asarray(op.weight, dtype=np.float64)
    return {"w_t": _weights(w.T), "bias": _f64(op.bias, tout.shape[0])}


def dense_product_wins(rho: float, rows: int, n_in: int, n_out: int) -> bool:
    """Cost model: the float64 BLAS product beats the event kernel on ``rows`` rows of density ``rho``."""
    macs = rows * n_in * n_out
    return macs / BLAS_MACS_PER_S + 8 * n_in * n_out / BLAS_BYTES_PER_S < rho * macs / EVENT_ADDS_PER_S


def f32_product_wins(rho: float, rows: int, n_in: int, n_out: int) -> bool:
    """Cost model: the float32 product (numba_f32, for binary inputs) beats the event kernel."""
    macs = rows * n_in * n_out
    return macs / SGEMM_MACS_PER_S + 4 * (n_in * n_out + rows * n_in) / BLAS_BYTES_PER_S < rho * macs / EVENT_ADDS_PER_S


def _gemm_weights(d, make):
    """The float64 weight matrix of the dense product, made on first use (most graphs never need it)."""
    if "w_gemm" not in d:
        d["w_gemm"] = np.ascontiguousarray(make(), dtype=np.float64)
    return d["w_gemm"]


def _eval_dense(node, ins, out, state, threads):
    x, o = _rows(ins[0]), _rows(out)
    d = node.data
    shape = (x.shape[0], x.shape[1], o.shape[1])
    # few rows: the product cannot win even on dense input, and the density is not worth estimating
    f32 = "f32" in d
    wins = f32_product_wins if f32 else dense_product_wins
    rho = density(x) if wins(1.0, *shape) else ASSUMED_DENSITY
    if f32 and f32_product_wins(rho, *shape):
        return dense_f32(node, x, o, state, threads)
    if dense_product_wins(rho, *shape):
        w = _gemm_weights(d, lambda: d["w_t"])
        parts = ranges(x.shape[0], threads if x.size * o.shape[1] >= PARALLEL_MIN_WORK else 1)

        def product(i):
            r0, r1 = parts[i]
            np.matmul(x[r0:r1], w, out=o[r0:r1])
        with blas_one_thread():
            run_tasks(product, len(parts), threads)
        o += d["bias"]
        return float(o.sum())
    # scatter tiles: a few row chunks per thread so uneven spike counts balance out; column
    # blocks too when there are few rows (one sample stepped time-major)
    rows, n_out = o.shape
    if rows >= 2 * threads:
        tiles = [r + (0, n_out) for r in ranges(rows, TASKS * threads)]
    else:
        cols = ranges(n_out, min(2 * threads, n_out // 64))
        tiles = [(r, r + 1) + c for r in range(rows) for c in cols]
    return share(dense_tile, tiles, (x, d["w_t"], d["bias"], o), int(x.size * (1 + n_out * rho)), threads)


# -- Conv -----------------------------------------------------------------------------
def conv_geometry(op, tin, tout) -> tuple:
    """(h, w, ho, wo, sh, sw, ph, pw, dh, dw): the one description of a conv's geometry for the kernels."""
    return tuple(int(d) for d in (*tin.shape[1:], *tout.shape[1:], *op.stride, *op.padding, *op.dilation))


def _prep_conv(op, tin, tout):
    """Weights per input channel, to the C_out / groups outputs of its group: kx reversed for the
    scatter (w_f: C_in, kh, kw, C_out / groups), tap-major for the gather (w_g: kh, kw, C_in, C_out / groups)."""
    w = np.asarray(op.weight, dtype=np.float64)
    c_out, c_grp, kh, kw = w.shape
    w_in = w.reshape(op.groups, c_out // op.groups, c_grp, kh, kw).transpose(0, 2, 3, 4, 1)
    w_in = w_in.reshape(op.groups * c_grp, kh, kw, c_out // op.groups)
    return {"w_f": _weights(w_in[:, :, ::-1]), "w_g": _weights(w_in.transpose(1, 2, 0, 3)),
            "kernel": (kh, kw), "c_grp": c_grp, "bias": _f64(op.bias, c_out), "dims": conv_geometry(op, tin, tout)}


def _product_weights(w_g, c_grp):
    """(groups, C_out / groups, c_grp * kh * kw): each group's matrix, columns in im2col's row order."""
    kh, kw, c_in, c_og = w_g.shape
    return w_g.reshape(kh, kw, c_in // c_grp, c_grp, c_og).transpose(2, 4, 3, 0, 1).reshape(c_in // c_grp, c_og, -1)


def unfold_product(d, x, o, threads, dtype=np.float64) -> None:
    """o = the conv of input rows x as im2col + one BLAS product per sample and group (output channel-first),
    plus the float64 bias; per thread, a chunk of samples at a time. ``dtype``: the unfolded input's and the
    product's precision (float64, or float32 for the checked float32 path of :mod:`snncc.sims.numba_f32`)."""
    key = "w_gemm" if dtype == np.float64 else "w_gemm32"
    if key not in d:
        d[key] = np.ascontiguousarray(_product_weights(d["w_g"], d["c_grp"]), dtype=dtype)
    w, bias, dims = d[key], d["bias"], d["dims"]
    groups, c_og, k = w.shape
    p = dims[2] * dims[3]
    chunk = max(1, min(x.shape[0], _COLS_BUDGET // (np.dtype(dtype).itemsize * groups * k * p)))
    parts = ranges(x.shape[0], threads if x.size * c_og * groups >= PARALLEL_MIN_WORK else 1)
    cols = d.setdefault(("cols", key), {})

    def product(i):
        r0, r1 = parts[i]
        if i not in cols or cols[i].shape[0] < min(chunk, r1 - r0):
            cols[i] = np.empty((min(chunk, r1 - r0), groups * k, p), dtype)
        for c0 in range(r0, r1, chunk):
            n = min(chunk, r1 - c0)
            im2col(0, n, x[c0:c0 + n], cols[i], *d["kernel"], *dims)
            block = o[c0:c0 + n].reshape(n, groups, c_og, p)
            if dtype == np.float64:
                np.matmul(w, cols[i][:n].reshape(n, groups, k, p), out=block)
                block += bias.reshape(groups, c_og, 1)
            else:  # float32 products, the bias added in float64
                np.add(np.matmul(w, cols[i][:n].reshape(n, groups, k, p)), bias.reshape(groups, c_og, 1), out=block)
    with blas_one_thread():
        run_tasks(product, len(parts), threads)


def conv_gather_wins(rho: float, d: dict) -> bool:
    """Cost model: the per-output gather (:func:`conv_events`) beats the scatter (:func:`conv_rows`) at input
    density ``rho``. Measured per layer shape (`python scripts/conv_kernels.py choice`; docs/results.md section
    2b): where the scatter adds one contiguous run of kw * C_out values per event and kernel row (stride and
    dilation 1 along x, no groups, kw > 1) it stays ahead up to ~12 events per input pixel (3x3: 32 channels beyond
    40 % density, 64 to ~20 %, 128 to ~10 %, 256 to ~3 %); with runs of C_out only (strided, dilated, 1x1) the
    gather wins from ~4 % density; grouped convs pay the gather's per-group fixed cost and keep the old crossover
    (events per field)."""
    kh, kw = d["kernel"]
    c_grp = d["c_grp"]
    _, _, _, _, _, sw, _, _, _, dw = d["dims"]
    if d["w_g"].shape[2] != c_grp:  # groups
        return rho * kh * kw * c_grp >= CONV_GATHER_EVENTS
    if sw == 1 and dw == 1 and kw > 1:
        return rho * c_grp >= CONV_GATHER_PIXEL_EVENTS
    return rho >= CONV_GATHER_DENSITY


def _eval_conv(node, ins, out, state, threads):
    """All three kernels take dilation and groups. A group's outputs see only its c_grp input
    channels, so the receptive field is kh * kw * c_grp inputs: a depthwise conv (c_grp 1) never
    reaches the gather's crossover, whose fixed cost per output pixel grows with the groups."""
    d = node.data
    x, o = _rows(ins[0]), _rows(out)
    rho = density(x)
    if "f32" in d and rho >= CONV_F32_MIN_DENSITY:
        if not (CONV_F32_TORCH and conv_product(d, x, o, threads, _product_weights)):
            unfold_product(d, x, o, threads, np.float32)
        return record_conv(node, x, state)
    if rho >= CONV_MIN_DENSITY:
        unfold_product(d, x, o, threads)
        return float(o.sum())
    work = int(x.size * (1 + d["w_f"][0].size * rho))  # kh * kw * C_out / groups adds per event
    kernel, w = (conv_events, d["w_g"]) if conv_gather_wins(rho, d) else (conv_rows, d["w_f"])
    return share(kernel, ranges(x.shape[0], TASKS * threads), (x, w, d["bias"], o, *d["dims"], d["c_grp"]), work,
                 threads)


# -- the rest -------------------------------------------------------------------------
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


def summed(ins):
    """Element-wise sum in port order, as the reference forms it."""
    if len(ins) == 1:
        return ins[0]
    total = ins[0] + ins[1]
    for x in ins[2:]:
        total += x
    return total


def _summed_scratch(node, ins):
    """summed(ins), written into a buffer the node keeps (a fresh large array per call costs page faults)."""
    if len(ins) == 1:
        return ins[0]
    buf = node.data.get("sum")
    if buf is None or buf.shape != ins[0].shape:
        buf = node.data["sum"] = np.empty(ins[0].shape)
    np.add(ins[0], ins[1], out=buf)
    for x in ins[2:]:
        buf += x
    return buf


def _eval_neuron(node, ins, out, state, threads):
    cur = _summed_scratch(node, ins)
    if "f32" in node.data and neuron_bound(node, state) is not None:  # fed by float32 currents this call
        return eval_checked(node, out, state, threads, cur)
    if "arrays" in node.data:  # per-neuron parameters and/or a CUBA synaptic current: one serial kernel
        v = state[node.name]
        isyn = state.setdefault((node.name, "i"), np.zeros_like(v))
        return neuron_arrays(np.ascontiguousarray(cur), v, isyn, out, *node.data["arrays"])
    blocks = out.shape[1] * -(-out.shape[2] // NEURON_BLOCK)
    return share(neuron_blocks, ranges(blocks, TASKS * threads),
                 (cur, state[node.name], out, *node.data["params"]), 4 * out.size, threads)


def _prep_integrator(op, tin, tout):
    leaky, inv_tau, _, _, v_rest, _, decay_input = op.params.scalars()
    return {"p": (leaky, inv_tau, v_rest, decay_input, op.params.current_based, 1.0 / op.params.tau_syn)}


def _eval_integrator(node, ins, out, state, threads):
    """A non-spiking population: the neuron's charge (and synapse) per step, vectorised over neurons."""
    leaky, inv_tau, v_rest, decay_input, cuba, inv_tau_syn = node.data["p"]
    cur = summed(ins)
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
    out[...] = summed(ins)
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

"""Float32 synaptic currents with a proven per-neuron error bound and an exact float64 fallback.

A synapse with binary spike input and exactly float32 weights may form its current as a float32 product
(torch's sgemm / direct conv, sims/numba_torch32.py; else numpy's, after a float32 im2col). Each current is a
float32 sum of ``m`` exact products ``w_i`` (the active inputs; zero terms add exactly), so whatever the summation
order, blocking or FMA use, ``|c32 - c| <= gamma32(m) * S`` with ``S = sum |w_i|`` over the active
inputs and ``gamma_n = n u / (1 - n u)``, ``u = 2^-24`` (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., eq. 3.5 / Lemma 3.1 for any order). ``S <= min(||w_row||_1, m * max|w_row|)``,
precomputed per output channel. Any float64 evaluation (the reference's, in its own order) is within
``gamma64(m + 1) * (S + |bias|)`` of the exact sum, so the two differ by at most their sum: ``bound``.

The neuron fed by such currents (through Add / Flatten, whose other terms are exact float64 values) steps
its membrane as usual and carries ``e_t >= |v_t - v_t(reference)|``:
``e_t = decay * e_{t-1} + gain * bound_t`` plus a float64 rounding margin; a certain hard reset zeroes it.
Where ``|h_t - v_th| <= e_t`` the spike is uncertain: that neuron's currents are recomputed exactly in
float64 from the stored inputs (:data:`EXACT`, one rule per synapse op) and its whole call replayed from
its state at the start of the call with :func:`snncc.neuron.step`. Everywhere else the float32 decision is
provably the reference's. See docs/methods.md, "Simulator kernels".
"""
from __future__ import annotations

import numba
import numpy as np

from snncc import neuron as nrn
from snncc.ir.ops import Add, Conv, Dense, Flatten, Neuron
from snncc.ir.types import Kind
from snncc.sims.numba_kernels import NEURON_BLOCK, charge, conv_src, fire, reset, vector_sum
from snncc.sims.numba_threads import PARALLEL_MIN_WORK, TASKS, blas_one_thread, ranges, run_tasks, share
from snncc.sims.numba_torch32 import mm_product

if __name__ not in ("snncc.sims.numba_f32", "__main__"):
    raise ImportError(f"import this module as snncc.sims.numba_f32, not {__name__}")

__all__ = ["U32", "U64", "gamma", "plan_float32", "dense_f32", "record_conv", "neuron_bound",
           "eval_checked",
           "dense_exact", "conv_exact", "EXACT", "neuron_checked"]

U32, U64 = 2.0 ** -24, 2.0 ** -53
_MARGIN = 2.0 ** -40  # relative margin per step for the float64 membrane updates of both trajectories
_GROW = 1.0 + 2.0 ** -30  # covers the rounding of the bound's own recursion
_jit = numba.njit(cache=True, nogil=True)


def gamma(n, u):
    """Higham's gamma_n = n u / (1 - n u) (n may be an array of counts)."""
    n = np.asarray(n, np.float64)
    return n * u / (1.0 - n * u)


# -- planning: which synapses may run in float32 ---------------------------------------------------
def _feeds_checked(plan, name, looped) -> bool:
    """Every consumer path from ``name`` through delay-0 Add / Flatten ends at a neuron that can check
    its decisions (scalar parameters, no synaptic current, not on a recurrent loop)."""
    cons = plan.graph.consumers(name)
    if not cons or name == plan.output:
        return False
    return all(p.delay == 0 and _sink_ok(plan, c, looped) for c in cons for p in plan.nodes[c].ports if p.src == name)


def _sink_ok(plan, name, looped) -> bool:
    nd = plan.nodes[name]
    if name in looped or nd.static:
        return False
    if isinstance(nd.op, Neuron):
        return "arrays" not in nd.data
    return isinstance(nd.op, (Add, Flatten)) and _feeds_checked(plan, name, looped)


def _tree(plan, name, f32, delay=0):
    """How a neuron's input value is formed: ("syn", name) for a float32 synapse, ("add", [subtrees]) for an Add
    (or the neuron's own ports) over one, ("buf", (name, delay)) for an exact float64 value read ``delay`` steps
    back (the delays along the path summed)."""
    nd = plan.nodes[name]
    if name in f32:
        assert delay == 0, "a float32 synapse reaches its neurons through delay-0 edges only"
        return ("syn", name)
    if isinstance(nd.op, (Add, Flatten)):
        subs = [_tree(plan, p.src, f32, delay + p.delay) for p in nd.ports]
        if any(s[0] != "buf" for s in subs):
            return ("add", subs) if len(subs) > 1 else subs[0]
    return ("buf", (name, delay))


def _leaves(tree, kind):
    if tree[0] == "add":
        return [x for s in tree[1] for x in _leaves(s, kind)]
    return [tree[1]] if tree[0] == kind else []


def plan_float32(plan, types) -> None:
    """Mark the synapses that may form float32 currents (binary input, float32 weights, every consumer a
    neuron that checks its decisions) and give those neurons their input tree (node.data["f32"])."""
    looped = {n for names, cyc in plan.schedule for n in names if cyc}
    f32 = set()
    for name, nd in plan.nodes.items():
        if not isinstance(nd.op, (Dense, Conv)) or nd.static or name in looped or nd.ports[0].delay:
            continue
        w = nd.data["w_t"] if isinstance(nd.op, Dense) else nd.data["w_g"]
        if types[nd.ports[0].src].kind is Kind.SPIKE and w.dtype == np.float32 and _feeds_checked(plan, name, looped):
            f32.add(name)
    while True:  # a neuron's float32 sources must share one channel layout (the bound's shape)
        trees = {n: ("add", [_tree(plan, p.src, f32, p.delay) for p in nd.ports])
                 for n, nd in plan.nodes.items() if isinstance(nd.op, Neuron)}
        bad = {s for t in trees.values() for s in _leaves(t, "syn")
               if len({plan.nodes[x].size // plan.nodes[x].data["bias"].size for x in _leaves(t, "syn")}) > 1}
        if not bad:
            break
        f32 -= bad
    for name in f32:
        d = plan.nodes[name].data
        if "w_t" in d:  # Dense: one row of |w| per output
            w = np.abs(d["w_t"].astype(np.float64)).T
        else:  # Conv: per output channel, its group's input channels under all taps
            kh, kw, c_in, c_og = d["w_g"].shape
            wg = np.abs(d["w_g"].astype(np.float64)).reshape(kh * kw, c_in // d["c_grp"], d["c_grp"], c_og)
            w = wg.transpose(1, 3, 0, 2).reshape(c_in // d["c_grp"] * c_og, -1)
        top = np.zeros((w.shape[0], w.shape[1] + 1))  # top[c, m]: the m largest |w| of channel c, summed
        np.cumsum(-np.sort(-w, axis=1), axis=1, out=top[:, 1:])
        d["f32"] = {"top": np.ascontiguousarray(top.T), "abs_bias": np.abs(d["bias"]), "field": w.shape[1],
                    "fan_out": _fan_out_sums(d)}
    for n, tree in trees.items():
        syns = _leaves(tree, "syn")
        if syns:
            leaves = [(s, 0) for s in syns] + _leaves(tree, "buf")
            plan.nodes[n].data["f32"] = {"tree": tree, "syns": syns, "leaves": leaves,
                                         "syn_data": {s: (plan.nodes[s].op, plan.nodes[s].data) for s in syns},
                                         "inner": plan.nodes[syns[0]].size // plan.nodes[syns[0]].data["bias"].size,
                                         "stats": [0, 0]}  # [neuron steps checked, neurons recomputed]


def _fan_out_sums(d):
    """Per input entry, the sum of the weights it reaches (all outputs), plus the bias summed over all outputs:
    the sum of a row's currents is then a float64 dot product with the input row (the activity statistic,
    formed in float64 rather than summed from the float32 currents)."""
    if "w_t" in d:
        return d["w_t"].astype(np.float64).sum(axis=1), float(d["bias"].sum())
    h, w, ho, wo, sh, sw, ph, pw, dh, dw = d["dims"]
    taps = d["w_g"].astype(np.float64).sum(axis=3)  # (kh, kw, C_in): each tap's weights summed over the group
    cov = np.zeros((taps.shape[2], h, w))
    oy, ox = np.arange(ho), np.arange(wo)
    for ky in range(taps.shape[0]):
        iy = oy * sh - ph + ky * dh
        iy = iy[(iy >= 0) & (iy < h)]
        for kx in range(taps.shape[1]):
            ix = ox * sw - pw + kx * dw
            ix = ix[(ix >= 0) & (ix < w)]
            cov[:, iy[:, None], ix[None, :]] += taps[ky, kx][:, None, None]
    return cov.reshape(-1), float(d["bias"].sum()) * ho * wo


@_jit
def input_stats(x, channels, counts, colsum):
    """One pass over input rows x (R, channels * pixels): counts[r] = the most nonzero entries at one pixel
    (over channels; with one channel, per row), colsum = x summed over rows."""
    pixels = x.shape[1] // channels
    per = np.zeros(pixels)
    colsum[:] = 0.0
    for r in range(x.shape[0]):
        per[:] = 0.0
        for c in range(channels):
            row = x[r, c * pixels:(c + 1) * pixels]
            acc = colsum[c * pixels:(c + 1) * pixels]
            for q in range(pixels):
                per[q] += row[q] != 0.0
                acc[q] += row[q]
        counts[r] = per.max()


def _stats(info, x, channels):
    """(most active inputs per pixel (R,), the float64 sum of the currents of rows x: see _fan_out_sums)."""
    fan, bias = info["fan_out"]
    counts, colsum = np.empty(x.shape[0]), np.empty(x.shape[1])
    input_stats(x, channels, counts, colsum)
    return counts, float(colsum @ fan) + bias * x.shape[0]


def _bound(info, m):
    """(R, C) bound on |c32 - c_ref| for rows with at most m (R,) active inputs per output."""
    m = np.minimum(m, info["field"]).astype(np.int64)
    s = info["top"][m]  # S <= the m largest |w| of the channel (R, C); m = field: ||w_row||_1
    m = m.astype(np.float64)[:, None]
    return gamma(m, U32) * s + 2.0 * gamma(m + 2.0, U64) * (s + info["abs_bias"][None, :])


# -- float32 synapses ----------------------------------------------------------------------------
def dense_f32(node, x, o, state, threads) -> float:
    """o = x @ w + bias with the product in float32 (torch.mm, else numpy's sgemm), the bias added in float64."""
    d = node.data
    w = d.setdefault("w_f32", np.ascontiguousarray(d["w_t"]))
    prod = mm_product(x, w, threads)
    if prod is not None:
        np.add(prod, d["bias"], out=o)
    else:
        parts = ranges(x.shape[0], threads if x.size * o.shape[1] >= PARALLEL_MIN_WORK else 1)

        def product(i):
            r0, r1 = parts[i]
            np.add(np.matmul(x[r0:r1].astype(np.float32), w), d["bias"], out=o[r0:r1])
        with blas_one_thread():
            run_tasks(product, len(parts), threads)
    counts, total = _stats(d["f32"], x, x.shape[1])
    state[(node.name, "f32")] = (x, _bound(d["f32"], counts))
    return total


def record_conv(node, x, state) -> float:
    """After a conv formed float32 currents from input rows x: keep x and the bound for the neurons it feeds;
    returns the float64 sum of the currents (the activity statistic)."""
    d = node.data
    (kh, kw), dims = d["kernel"], d["dims"]
    per_pixel, total = _stats(d["f32"], x, x.shape[1] // (dims[0] * dims[1]))
    state[(node.name, "f32")] = (x, _bound(d["f32"], kh * kw * np.minimum(per_pixel, d["c_grp"])))
    return total


# -- the exact currents of chosen neurons ---------------------------------------------------------
@_jit
def dense_exact(x, w_t, bias, rows, cols, out):
    """out[i] = bias[j] + sum_k x[r, k] w_t[k, j] in float64 (r, j = rows[i], cols[i])."""
    for i in range(rows.size):
        r, j = rows[i], cols[i]
        acc = bias[j]
        for k in range(x.shape[1]):
            if x[r, k] != 0.0:
                acc += x[r, k] * np.float64(w_t[k, j])
        out[i] = acc


@_jit
def conv_exact(x, w_g, bias, rows, cols, out, h, w, ho, wo, sh, sw, ph, pw, dh, dw, c_grp):
    """out[i] = the float64 conv current of output j = cols[i] (channel-first) of row rows[i]."""
    kh, kw, c_og = w_g.shape[0], w_g.shape[1], w_g.shape[3]
    for i in range(rows.size):
        r, j = rows[i], cols[i]
        co, q = j // (ho * wo), j % (ho * wo)
        oy, ox, g = q // wo, q % wo, co // c_og
        acc = bias[co]
        for ky in range(kh):
            iy = conv_src(oy, ky, sh, ph, dh, h)
            if iy < 0:
                continue
            for kx in range(kw):
                ix = conv_src(ox, kx, sw, pw, dw, w)
                if ix < 0:
                    continue
                for ci in range(g * c_grp, (g + 1) * c_grp):
                    xv = x[r, (ci * h + iy) * w + ix]
                    if xv != 0.0:
                        acc += xv * np.float64(w_g[ky, kx, ci, co - g * c_og])
        out[i] = acc


def _dense_exact(d, x, rows, cols):
    out = np.empty(rows.size)
    dense_exact(x, d["w_t"], d["bias"], rows, cols, out)
    return out


def _conv_exact(d, x, rows, cols):
    out = np.empty(rows.size)
    conv_exact(x, d["w_g"], d["bias"], rows, cols, out, *d["dims"], d["c_grp"])
    return out


EXACT = {Dense: _dense_exact, Conv: _conv_exact}  # op class: exact_current(data, input rows, rows, outputs)


# -- the checked neuron ------------------------------------------------------------------------------
def neuron_bound(node, state):
    """The summed (T*B, C) bound of a checked neuron's float32 sources in this call, None if all ran exact."""
    total = None
    for s in node.data["f32"]["syns"]:
        got = state.get((s, "f32"))
        if got is not None:
            total = got[1] if total is None else total + got[1]
    return total


@_jit
def _checked_run(vb, eb, pb, cu, ou, bt, bs, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input, dec, gain):
    """One step of a run of neurons; neuron j's current bound is bt[j * bs] (bs 0: one channel)."""
    hard = 1.0 - soft
    for j in range(vb.size):
        vv, xx = vb[j], cu[j]
        hh = charge(vv, xx, leaky, inv_tau, v_rest, decay_input)
        s = fire(hh, v_th)
        e = (dec * eb[j] + gain * bt[j * bs]) * _GROW + _MARGIN * (
            abs(vv) + abs(xx) + abs(hh) + abs(v_th) + abs(v_rest))
        pb[j] |= abs(hh - v_th) <= e
        vb[j] = reset(hh, s, v_th, v_reset, soft)
        eb[j] = e * (1.0 - hard * s)
        ou[j] = s


@_jit
def neuron_checked(k0, k1, cur, bnd, inner, v, err, pend, out, leaky, inv_tau, v_th, v_reset, v_rest, soft,
                   decay_input, dec, gain):
    """neuron_blocks with the error bound: err (B, N) carries e_t, pend (B, N) flags uncertain neurons.
    bnd: (steps, B, C), neuron j's channel j // inner (a run of neurons per channel). Returns #spikes."""
    n = cur.shape[2]
    nblk = (n + NEURON_BLOCK - 1) // NEURON_BLOCK
    total = 0.0
    for k in range(k0, k1):
        b, j0 = k // nblk, (k % nblk) * NEURON_BLOCK
        j1 = min(n, j0 + NEURON_BLOCK)
        for t in range(cur.shape[0]):
            if inner == 1:
                _checked_run(v[b, j0:j1], err[b, j0:j1], pend[b, j0:j1], cur[t, b, j0:j1], out[t, b, j0:j1],
                             bnd[t, b, j0:j1], 1, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input, dec, gain)
            else:
                for c in range(j0 // inner, (j1 - 1) // inner + 1):
                    s0, s1 = max(j0, c * inner), min(j1, (c + 1) * inner)
                    _checked_run(v[b, s0:s1], err[b, s0:s1], pend[b, s0:s1], cur[t, b, s0:s1], out[t, b, s0:s1],
                                 bnd[t, b, c:c + 1], 0, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input,
                                 dec, gain)
            total += vector_sum(out[t, b, j0:j1])
    return total


def _value(tree, syn_data, views, state, t_idx, b_idx, j_idx, batch):
    """Exact float64 values (steps, P) of a tree for neurons (b_idx, j_idx), summed as the reference does."""
    kind, arg = tree
    if kind == "buf":
        return views[arg][:, b_idx, j_idx]
    if kind == "syn":
        if state.get((arg, "f32")) is None:  # this call ran the synapse in float64: its values are exact
            return views[(arg, 0)][:, b_idx, j_idx]
        x = state[(arg, "f32")][0]
        op, d = syn_data[arg]
        rows = (t_idx[:, None] * batch + b_idx[None, :]).ravel()
        cols = np.broadcast_to(j_idx, (t_idx.size, j_idx.size)).ravel()
        return EXACT[type(op)](d, x, rows, np.ascontiguousarray(cols)).reshape(t_idx.size, -1)
    parts = [_value(s, syn_data, views, state, t_idx, b_idx, j_idx, batch) for s in arg]
    total = parts[0] + parts[1] if len(parts) > 1 else parts[0]
    for p in parts[2:]:
        total += p
    return total


def eval_checked(node, out, state, threads, cur) -> float:
    """A neuron fed by float32 currents: step with the bound, then recompute every uncertain neuron
    exactly (its float64 currents, its dynamics replayed from the call's start)."""
    info = node.data["f32"]
    bound = neuron_bound(node, state)
    v = state[node.name]
    steps, batch, n = out.shape
    v0 = v.copy()
    err = np.zeros_like(v)
    pend = np.zeros(v.shape, np.bool_)
    leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = node.data["params"]
    dec = {0: 1.0, 1: 1.0 - inv_tau, 2: 0.0}[leaky]
    gain = inv_tau if leaky == 1 and decay_input else 1.0
    blocks = batch * -(-n // NEURON_BLOCK)
    total = share(neuron_checked, ranges(blocks, TASKS * threads),
                  (cur, bound.reshape(steps, batch, -1), info["inner"], v, err, pend, out,
                   *node.data["params"], dec, gain), 6 * out.size, threads)
    b_idx, j_idx = np.nonzero(pend)
    info["stats"][0] += v.size
    info["stats"][1] += b_idx.size
    if b_idx.size:
        views = state[(node.name, "views")]
        exact = _value(info["tree"], info["syn_data"], views, state, np.arange(steps), b_idx, j_idx, batch)
        vv = v0[b_idx, j_idx]
        before = out[:, b_idx, j_idx].sum()
        for t in range(steps):
            s, vv = nrn.step(vv, exact[t], leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input)
            out[t, b_idx, j_idx] = s
        v[b_idx, j_idx] = vv
        total += float(out[:, b_idx, j_idx].sum() - before)
    return total

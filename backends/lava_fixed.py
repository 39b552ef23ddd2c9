"""Fixed-point (bit-accurate) lowering for Lava: quantisation and an independent integer reference.

This module turns the float :class:`~snncc.backends.lava_backend.LavaPlan` (same processes,
same alignment/relays/clock chain, same one-step Dense delay) into the integer parameters of
Lava's bit-accurate models (``Loihi2SimCfg(select_tag="fixed_pt")``: ``PyLifModelBitAcc`` and
``PyDenseModelBitAcc``, lava-nc 0.10), and simulates those integer models itself with numpy
so that the two can be compared spike for spike.

Lava's bit-accurate arithmetic (read from lava/proc/{dense,lif}/models.py and
lava/utils/weightutils.py; reproduced exactly by :func:`simulate`, int64 with explicit wraps)
---------------------------------------------------------------------------------------------
Dense (``weights`` W int, ``weight_exp`` e, ``num_weight_bits`` 8, ``sign_mode``), once::

    MIXED       W = clip(W, -256, 255); W = (W >> 1) << 1   (the lowest bit is lost: even values,
                                                             i.e. an 8-bit mantissa m, W = 2 m)
    EXCITATORY  W = clip(W, 0, 255)
    INHIBITORY  W = -clip(-W, 0, 255)

and every step t (``a_buff`` starts at 0; this is the one-step delay)::

    a_out[t] = a_buff                      (sent over an int32 channel: wraps at 32 bits)
    acc      = sum_j W[:, j] * s_in[t][j]  (int64)
    a_buff   = acc << e  if e > 0  else  acc >> -e      (arithmetic shift: floor)

LIF (``du``, ``dv`` 12-bit unsigned, ``vth`` 17-bit, ``bias_mant`` 13-bit signed,
``bias_exp`` 3-bit; u, v 24-bit) every step, with a_in = sum of the incoming a_out (int32)::

    bias  = bias_mant << bias_exp
    x     = u * (4096 - (du + 1))           (du + 1: Loihi's ds_offset = 1)
    u     = int32(sign(x) * (|x| >> 12)) + int32(a_in << 6)        (int32 arithmetic)
    u     = u - 2^24  if u >  2^23          (24-bit wrap exactly as Lava codes it: a value of
    u     = u + 2^24  if u <= -2^23          exactly 2^23 is kept, -2^23 becomes +2^23)
    y     = v * (4096 - dv)                 (dm_offset = 0)
    v     = clip(int32(sign(y) * (|y| >> 12)) + u + bias, -(2^23 - 1), 2^23 - 1)
    spike = v > (vth << 6);   v[spike] = 0  (u is never reset)

Mapping from the float plan (units)
-----------------------------------
The float plan (see lava_backend) already has w' = w (1 - 1/tau) + x / tau with the currents x/tau
folded into its weights and biases and a threshold theta = v_th - v_reset. Each neuron
population P gets a power-of-two scale 2^k (``scale_exp`` k): one a_in unit is 2^-k, one
v unit is 2^-(k+6) in float units. Then

    du  = 4095             u = a_in << 6: u carries only this step's input (exact)
    dv  = round(4096 / tau) (IF: 0, no decay; exact when 4096/tau is an integer, e.g. tau = 2)
    vth = round((theta 2^(k+6) - 1) / 64): Lava fires on v > 64 vth, i.e. v >= 64 vth + 1,
          the integer closest to theta 2^(k+6) that it can express (the float lowering's
          ">=" compensation becomes this +1)
    W   = round(w 2^k / 2^(e + mixed)) with one exponent e per Dense, the smallest that fits the
          largest |w| in the mantissa (mixed: [-128, 127] stored as 2m; single-sign: [0, 255],
          the sign mode taken from the float matrix), e in Loihi's [-8, 7]; mantissas that do
          not fit at e = 7 are clipped and counted (``clipped`` in the report)
    bias = round(b 2^(k+6)) split per neuron into bias_mant in [-4096, 4095] and the smallest
          bias_exp in [0, 7] that fits (so small biases keep all their bits)

k is chosen per population, as large as possible (finest threshold, bias and leak resolution)
such that nothing can overflow: vth <= 2^17 - 1, every incoming e <= 7, the worst-case
per-step input (all presynaptic neurons spiking, sign by sign) |a_in| <= 2^17 - 1 (so u never
wraps), and the constant and worst-case per-sample biases fit 13 + 7 bits. The per-sample
(direct-input) bias bound assumes |x| <= ``input_bound`` (default 1.0: normalised data).
``scale_exp={pop: k}`` forces k; a parameter that then does not fit raises a one-line
:class:`LoweringError` naming the population/Dense, the range and the value. Helper
populations (OR pools, relays, clock) are exact: weight 1 (e = 0), vth = 0, du = dv = 4095
(v is 0 or one input, so the 1/4096 residue truncates to 0), clock bias_mant = 1.

What is exact and what is not
-----------------------------
* Exact (tested with np.array_equal): Lava fixed_pt spikes == :func:`simulate` /
  :func:`run_integer` spikes, for an MLP, a CNN with max (OR) and avg pooling (lava Conv
  processes, pool matrices from lava_backend.pool_matrix_sparse), a strided/padded CNN with a
  downsample conv, an identity shortcut and a pool-folded (Toeplitz) conv (tests/test_lava_conv.py), a spike-input CNN, a recurrent IF net
  with hard reset and a clock-fed synapse bias, a spike-residual net with relays, a two-block
  SEW net with graded spikes (tests/test_lava_graded.py).
* Exact w.r.t. the float network: the structure, alignment and delays; OR pooling, relays, the
  clock chain; u (du = 4095); IF integration; LIF leak when 4096/tau is an integer (tau = 2).
* Not exact w.r.t. the float network: 8-bit weights (error <= step/2 per weight, reported), the
  floor of the summed input when e < 0, thresholds (+-32 v units), leaks (dv rounding and the
  per-step truncation of v (4096 - dv) / 4096 toward zero, < 1 v unit per step), biases
  (<= 0.5 2^bias_exp v units), v saturation at +-(2^23 - 1) (e.g. a strongly inhibited IF
  neuron), and the direct-encoded analog input: its current W x + b (first layer) is computed
  on the host in float64 with the reference's own rules, exactly as in the float lowering, and
  only then rounded per sample and per neuron to bias_mant * 2^bias_exp (13-bit mantissa:
  relative error <= 2^-13 once the exponent is > 0, absolute <= 0.5 v unit otherwise). It is not
  an on-chip integer product W x; both Lava and :func:`run_integer` receive the same integers.
* lava Conv (lava_backend lowers spike-reading convs to it): Lava 0.10's PyConvModelFixed
  ignores ``weight_exp`` and ``num_weight_bits`` (checked: it computes a plain integer conv
  of the weights as given, no lowest-bit truncation, then wraps a_buf to 24 signed bits). So a
  Conv is quantised like a Dense (same mantissa, same sign-mode truncation) but its exponent is
  restricted to e >= 0 and applied by pre-shifting the weights (``lava_conv_kwargs``: Lava gets
  weight_exp = 0); the effective integer weights are then exactly the Dense ones and the sums
  are exact. A Conv whose weights would want e < 0 (weights below ~1/1000 of the threshold)
  gets e = 0: exact w.r.t. the integer reference, fewer mantissa bits (the report shows the
  error). :func:`simulate` computes the conv with torch (float64, exact for these integers),
  independent of Lava's scipy code, including the 24-bit wrap (never reached: |a_in| bound).
  Sparse (identity/relay/OR windows) uses Lava's PySparseModelBitAcc: same arithmetic as Dense.
* A direct-encoded input reaching a population deeper than depth 0 (a per-sample *Dense
  weight* in the float plan) is refused: its weight exponent would depend on the sample.
* Soft reset stays refused (as in the float lowering).
* netx mode (``lower_fixed(graph, netx=True)``, used by :mod:`snncc.backends.lava_netx` for the
  lava-dl netx HDF5 export): the same quantiser under netx's conventions, so that the integers a
  netx file holds *are* this plan's parameters: every synapse into a neuron population has
  weight_exp 0 (netx weights are plain integers; netx's loader finds the exponent itself), so
  the scale search goes down from the threshold-limited k until the largest weight fits the
  8-bit mantissa at e = 0; every neuron bias (constant or per-sample) has bias_exp 6 (netx's
  fixed bias exponent): bias_mant = rint(b 2^k), one rounding. Clock-fed synapse biases of
  deeper populations are Dense weights at e = 0, i.e. the same integer in a_in units as a netx
  bias_mant << 6 in v units.
* Graded spikes (``lower_fixed(graph, graded=True)``; a SEW spike ADD lowered to a GradedVec,
  see lava_backend): supported bit-exactly. Lava's GradedVec has a fixed_pt model
  (PyGradedVecModelFixed: v += a_in; s_out = v * (|v| > vth); v = 0; int32, 24-bit payload)
  that with vth = 0 forwards its integer input, the spike count, in the same step. Its inputs are
  0/1 Sparse paths (weight 1, e = 0: exact), so it sends the exact count. The bit-accurate
  Dense/Sparse models with num_message_bits > 0 then compute ``weights.dot(s_in)`` instead of
  summing the columns of the spiking inputs, and shift the sum by weight_exp exactly as for
  spikes; PyConvModelFixed convolves the integer counts (24-bit wrap). :func:`simulate` does the
  same (graded populations output their input; the synapses multiply by the count), and the
  worst-case input bound of a population multiplies each graded source's weights by its largest
  count (``Pop.max_value``), so u still cannot wrap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from snncc.backends import lava_backend as lb
from snncc.backends.lava_backend import LoweringError
from snncc.ir.ops import Conv, Dense, Flatten, Input, Pool

__all__ = ["FixedPop", "FixedConn", "FixedParams", "quantize", "quantize_plan", "lower_fixed",
           "simulate", "run_integer", "sample_bias", "lava_lif_kwargs", "lava_dense_kwargs",
           "lava_conv_kwargs"]

DECAY_UNITY = 4096           # 12-bit decays
DU_MAX = 4095
VTH_MAX = 2 ** 17 - 1        # 17-bit unsigned threshold (left-shifted by 6)
UV_MAX = 2 ** 23             # 24-bit u, v
A_IN_MAX = 2 ** 17 - 1       # |a_in << 6| < 2^23: u never wraps
BIAS_MANT = (-4096, 4095)    # 13-bit signed
BIAS_EXP_MAX = 7             # 3-bit
WEIGHT_EXP = (-8, 7)
MANT = {"mixed": (-128, 127), "excitatory": (0, 255), "inhibitory": (-255, 0)}
_K_SEARCH = 48               # how far below the threshold-limited k the search goes


@dataclass
class FixedPop:
    name: str
    role: str
    k: int | None                # v unit = 2^-(k+6) float units (None: helper population)
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray


@dataclass
class FixedConn:
    name: str
    weight: np.ndarray           # int64, Lava-ready (mixed: even values)
    weight_exp: int
    sign_mode: str               # mixed | excitatory | inhibitory
    clipped: int = 0
    kind: str = "dense"          # dense | sparse (CSR weight) | conv (kernel, weight_exp >= 0 pre-shifted)


@dataclass
class FixedParams:
    pops: dict
    conns: dict
    report: list = field(default_factory=list)
    input_bound: float = 1.0
    netx: bool = False           # netx conventions: weight_exp 0, bias_exp 6 (module docstring)

    def to_json(self) -> dict:
        return {"input_bound": self.input_bound, "netx_conventions": self.netx,
                "populations": {p.name: {"scale_exp": p.k, "du": p.du, "dv": p.dv, "vth": p.vth}
                                for p in self.pops.values()},
                "dense": {c.name: {"weight_exp": c.weight_exp, "sign_mode": c.sign_mode,
                                   "num_weight_bits": 8, "clipped": c.clipped, "process": c.kind}
                          | ({"lava_weight_exp": 0, "note": "lava's CPU Conv ignores weight_exp: the "
                              "weights are passed pre-shifted (mantissa << weight_exp)"}
                             if c.kind == "conv" else {})
                          for c in self.conns.values()},
                "report": self.report}

    def summary(self) -> str:
        lines = ["fixed-point quantisation (Loihi2SimCfg(select_tag='fixed_pt'))"]
        for r in self.report:
            if r["kind"] == "population":
                lines.append(f"  LIF    {r['layer']:<22} k={r['scale_exp']:<3} dv={r['dv']:<5} vth={r['vth']:<7} "
                             f"threshold err={r['threshold_error']:.3g} decay err={r['decay_error']:.3g} "
                             f"bias err={r['bias_max_abs_error']:.3g}"
                             + (" + per-sample input current (13-bit mantissa)" if r["per_sample_bias"] else ""))
            else:
                lines.append(f"  {lb._KIND_NAME[r['process']]:<6} {r['layer']:<22} e={r['weight_exp']:<3} {r['sign_mode']:<10} "
                             f"max|w|={r['max_abs_weight']:.4g} max err={r['max_abs_error']:.3g} "
                             f"rel={r['rel_error']:.3g} clipped={r['clipped']}")
        return "\n".join(lines)


# -- pieces -------------------------------------------------------------------------------------
def _vals(w) -> np.ndarray:
    """The stored values of a weight: a dense matrix, a conv kernel, or a CSR matrix's data."""
    return w.data if sparse.issparse(w) else np.asarray(w)


def _map(w, f):
    """Apply an element-wise function to a weight's stored values (CSR structure kept)."""
    if sparse.issparse(w):
        out = w.copy()
        out.data = f(w.data)
        return out
    return f(np.asarray(w))


def _sign_mode(w) -> str:
    w = _vals(w)
    if np.any(w > 0) and np.any(w < 0):
        return "mixed"
    return "inhibitory" if np.any(w < 0) else "excitatory"


def _quant_weights(w_a, mode: str, min_exp: int = WEIGHT_EXP[0]):
    """w_a in a_in units (dense, CSR or a conv kernel) -> (Lava weights, e, clipped, e wanted
    before clamping). ``min_exp`` = 0 for lava Conv (no floor shift available, see
    :func:`lava_conv_kwargs`)."""
    lo, hi = MANT[mode]
    mixed = int(mode == "mixed")
    w_s, w_a = w_a, _vals(w_a)
    pos, neg = float(w_a.max(initial=0.0)), float(-w_a.min(initial=0.0))
    need = max(pos / hi if hi > 0 else 0.0, neg / -lo if lo < 0 else 0.0) / 2 ** mixed
    e = math.ceil(math.log2(need)) if need > 0 else 0

    def mant(e):
        return np.rint(w_a / 2.0 ** (e + mixed))
    while need > 0 and (mant(e).max(initial=0) > hi or mant(e).min(initial=0) < lo):
        e += 1                                    # guards log2 rounding at the boundary
    wanted = e
    e = int(min(max(e, WEIGHT_EXP[0], min_exp), WEIGHT_EXP[1]))
    m = mant(e)
    clipped = int(np.count_nonzero((m < lo) | (m > hi)))
    m = np.clip(m, lo, hi).astype(np.int64) * (2 if mixed else 1)
    return _map(w_s, lambda _: m), e, clipped, wanted


def _lava_weights(w, mode: str):
    """What PyDenseModelBitAcc / PySparseModelBitAcc do to the weights once (clip_weights +
    truncate_weights); lava_conv_kwargs applies the same to Conv kernels itself."""
    def f(w):
        w = np.asarray(w, dtype=np.int64)
        if mode == "mixed":
            return (np.clip(w, -256, 255) >> 1) << 1
        if mode == "inhibitory":
            return -np.clip(-w, 0, 255)
        return np.clip(w, 0, 255)
    return _map(w, f)


def _effective(c: FixedConn):
    """Per-weight value in a_in units (ignores the floor of the summed input when e < 0)."""
    return _map(_lava_weights(c.weight, c.sign_mode), lambda d: d * 2.0 ** c.weight_exp)


def _conv_apply(x: np.ndarray, kernel: np.ndarray, cv: dict) -> np.ndarray:
    """conv2d of (B, C*H*W) C-order vectors with a (C_out, C_in, kh, kw) kernel -> (B, out) float64
    (exact for integer operands below 2^53)."""
    ci, h, w = cv["in_shape"]
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, ci, h, w))
    out = F.conv2d(xt, torch.as_tensor(np.asarray(kernel, dtype=np.float64)),
                   stride=tuple(cv["stride"]), padding=tuple(cv["padding"]))
    return out.numpy().reshape(xt.shape[0], -1)


def _row_pos_neg(eff, conv: dict | None):
    """Per destination neuron: sum of the positive / of the negative incoming weights."""
    if conv is not None:   # all-ones input: kernel summed over C_in, times the in-bounds masks
        _, h, w = conv["in_shape"]
        _, ho, wo = conv["out_shape"]
        kh, kw = eff.shape[2:]
        (sy, sx), (py, px) = conv["stride"], conv["padding"]
        iy = np.arange(ho)[None, :] * sy - py + np.arange(kh)[:, None]
        ix = np.arange(wo)[None, :] * sx - px + np.arange(kw)[:, None]
        vy = ((iy >= 0) & (iy < h)).astype(np.float64)         # (kh, ho)
        vx = ((ix >= 0) & (ix < w)).astype(np.float64)         # (kw, wo)

        def f(k):
            return np.einsum("ckl,ky,lx->cyx", k.sum(axis=1), vy, vx).ravel()
        return f(np.maximum(eff, 0)), f(np.maximum(-eff, 0))
    if sparse.issparse(eff):
        return (np.asarray(eff.maximum(0).sum(axis=1)).ravel(), np.asarray((-eff).maximum(0).sum(axis=1)).ravel())
    return np.where(eff > 0, eff, 0).sum(axis=1), np.where(eff < 0, -eff, 0).sum(axis=1)


def _split_bias(bv: np.ndarray):
    """Integer v-unit biases -> (mant, exp, fits) with the smallest exp in [0, 7] that fits."""
    bv = np.asarray(bv, dtype=np.float64)
    mant = np.zeros(bv.shape, np.int64)
    exp = np.full(bv.shape, -1, np.int64)
    for x in range(BIAS_EXP_MAX + 1):
        m = np.rint(bv / 2.0 ** x)
        ok = (exp < 0) & (m >= BIAS_MANT[0]) & (m <= BIAS_MANT[1])
        mant[ok], exp[ok] = m[ok].astype(np.int64), x
    fits = exp >= 0
    exp[~fits] = BIAS_EXP_MAX
    return mant, exp, fits


NETX_BIAS_EXP = 6            # netx builds every LIF with bias_exp = 6


def _netx_bias(b_k: np.ndarray):
    """netx: biases in a_in units (b 2^k) -> (mant, exp = 6, fits): one rounding."""
    mant = np.rint(np.asarray(b_k, dtype=np.float64))
    fits = (mant >= BIAS_MANT[0]) & (mant <= BIAS_MANT[1])
    return (np.clip(mant, *BIAS_MANT).astype(np.int64), np.full(mant.shape, NETX_BIAS_EXP, np.int64), fits)


def _static_bounds(graph, plan, input_bound: float) -> dict:
    """|value| bound (per element) of each static (direct-input) node for |x| <= input_bound."""
    types = graph.infer()
    out = {}
    for n in plan.static:
        op = graph.op(n)
        ins = [out[p.src] for p in graph.inputs(n)]
        if isinstance(op, Input):  # |x| <= input_bound before the input's normalisation, if any
            out[n] = np.full(types[n].size, op.value_bound(float(input_bound)))
        elif isinstance(op, Flatten):
            out[n] = ins[0]
        elif isinstance(op, Pool):
            (p,) = graph.inputs(n)
            k = op.kernel[0] * op.kernel[1]
            val = 1.0 / k if op.mode == "avg" else 1.0
            pm = lb.pool_matrix_sparse(types[p.src].shape, op.kernel, op.stride, op.padding, val)
            out[n] = pm @ ins[0]   # (max <= sum of the window's bounds)
        elif isinstance(op, (Dense, Conv)):
            (p,) = graph.inputs(n)
            w = np.abs(np.asarray(op.weight, dtype=np.float64))
            b = 0.0 if op.bias is None else np.repeat(np.abs(np.asarray(op.bias, dtype=np.float64)),
                                                      types[n].size // np.size(op.bias))
            if isinstance(op, Dense):
                out[n] = w @ ins[0] + b
            else:   # |W| @ bound as a conv (no unrolled matrix)
                cv = {"in_shape": types[p.src].shape, "stride": op.stride, "padding": op.padding}
                out[n] = _conv_apply(ins[0][None], w, cv)[0] + b
        else:  # pragma: no cover - the float lowering only marks these as static
            raise LoweringError(f"fixed point: cannot bound static node {n!r}")
    return out


def _fail(what: str, value, integer, rng: str, k) -> None:
    raise LoweringError(f"fixed point: {what} = {value:.6g} is {integer} at scale 2^{k} "
                        f"(v unit 2^-{k + 6}), beyond Lava's range {rng}")


def _theta(p) -> float:
    return float(np.nextafter(p.vth, np.inf))   # the float plan stores nextafter(theta, -inf)


class _PopQuant:
    """Everything needed to try a scale k for one neuron population."""

    def __init__(self, plan, pop, conns, bias_bound, netx: bool = False):
        self.pop, self.conns, self.bias_bound, self.netx = pop, conns, bias_bound, netx
        self.theta = _theta(pop)
        self.modes = {c.name: _sign_mode(c.weight) for c in conns}
        self.convs = {c.name: c.conv if c.kind == "conv" else None for c in conns}
        # largest value a source sends: 1 for spikes, the largest count for a graded source
        self.src_max = {c.name: (plan.pops[c.src].max_value if c.src in plan.pops and plan.pops[c.src].graded
                                 else 1) for c in conns}

    def attempt(self, k: int):
        """(FixedPop, {conn: FixedConn}, violation or None) at scale k."""
        p = self.pop
        viol = None

        def bad(*args):
            nonlocal viol
            if viol is None:
                viol = args
        theta_v = self.theta * 2.0 ** (k + 6)
        vth = int(np.rint((theta_v - 1) / 64))
        if vth > VTH_MAX or vth < 0:
            bad(f"threshold of population {p.name!r}", self.theta, vth, f"vth 0..{VTH_MAX} (17 bits)")
        qc, pos, neg = {}, np.zeros(p.size), np.zeros(p.size)
        for c in self.conns:
            conv = self.convs[c.name]
            w, e, clipped, wanted = _quant_weights(c.weight * 2.0 ** k, self.modes[c.name],
                                                   0 if conv is not None or self.netx else WEIGHT_EXP[0])
            if self.netx and wanted > 0:
                bad(f"netx: largest |weight| of {lb._KIND_NAME[c.kind]} {c.name!r}",
                    float(np.abs(_vals(c.weight)).max()), f"2^{wanted}-scaled", "integer weights (weight_exp 0)")
            if wanted > WEIGHT_EXP[1]:
                bad(f"largest |weight| of {lb._KIND_NAME[c.kind]} {c.name!r}", float(np.abs(_vals(c.weight)).max()),
                    f"2^{wanted}-scaled", f"weight_exp {WEIGHT_EXP[0]}..{WEIGHT_EXP[1]}")
            qc[c.name] = q = FixedConn(c.name, w, e, self.modes[c.name], clipped, c.kind)
            ps, ns = _row_pos_neg(_effective(q), conv)
            pos += ps * self.src_max[c.name]
            neg += ns * self.src_max[c.name]
        worst = float(max(pos.max(initial=0), neg.max(initial=0)))
        if worst > A_IN_MAX:
            bad(f"worst-case input current of population {p.name!r}", worst * 2.0 ** -k, int(worst),
                f"|a_in| <= {A_IN_MAX} (u = a_in << 6 is 24 bits)")
        bv = np.rint(p.bias * 2.0 ** (k + 6))
        mant, exp, fits = _netx_bias(p.bias * 2.0 ** k) if self.netx else _split_bias(bv)
        exp_max = NETX_BIAS_EXP if self.netx else BIAS_EXP_MAX
        if not fits.all():
            i = int(np.argmin(fits))
            bad(f"bias of population {p.name!r} (neuron {i})", float(p.bias[i]), int(bv[i]),
                f"bias_mant {BIAS_MANT[0]}..{BIAS_MANT[1]} << bias_exp {'6 (netx)' if self.netx else '0..7'}")
        if self.bias_bound is not None:
            bb = float(np.max(self.bias_bound)) * 2.0 ** (k + 6)
            if np.rint(bb / 2 ** exp_max) > BIAS_MANT[1]:
                bad(f"worst-case per-sample input bias of population {p.name!r}",
                    float(np.max(self.bias_bound)), int(bb),
                    f"bias_mant {BIAS_MANT[0]}..{BIAS_MANT[1]} << bias_exp 0..{BIAS_EXP_MAX}")
        dv = 0 if p.dv == 0 else int(min(max(np.rint(p.dv * DECAY_UNITY), 0), DU_MAX))
        fp = FixedPop(p.name, p.role, k, DU_MAX, dv, max(vth, 0), mant, exp)
        return fp, qc, viol


def quantize_plan(graph, plan, input_bound: float = 1.0, scale_exp=None, netx: bool = False) -> FixedParams:
    """Quantise a float LavaPlan (pure: plan and graph are not modified). ``netx``: netx's
    conventions (integer weights with weight_exp 0, bias_exp 6; module docstring)."""
    if any(d.var == "weights" for d in plan.dyns):
        d = next(d for d in plan.dyns if d.var == "weights")
        raise LoweringError(f"fixed point: direct-input current into a deeper population ({d.target!r}) "
                            "needs a per-sample Dense weight exponent; not supported")
    bounds = _static_bounds(graph, plan, input_bound) if plan.dyns else {}
    pops, conns, report = {}, {}, []
    for p in plan.pops.values():
        ins = [c for c in plan.conns if c.dst == p.name]
        if p.role != "neuron":
            for c in ins:
                v = _vals(c.weight)
                if c.kind == "conv" or not np.all((v == 0) | (v == 1)):  # pragma: no cover
                    raise LoweringError(f"fixed point: helper Dense {c.name!r} has non-0/1 weights")
                conns[c.name] = FixedConn(c.name, _map(c.weight, lambda d: np.asarray(d).astype(np.int64)), 0,
                                          "excitatory", 0, c.kind)
            bias = np.rint(p.bias).astype(np.int64)
            pops[p.name] = FixedPop(p.name, p.role, None, DU_MAX, DU_MAX, 0, bias, np.zeros(p.size, np.int64))
            continue
        bias_bound = None
        for d in plan.dyns:
            if d.target == p.name:
                bias_bound = np.abs(d.const) + sum(abs(s) * bounds[n] for n, s in d.terms)
        pq = _PopQuant(plan, p, ins, bias_bound, netx)
        forced = None
        if scale_exp is not None:
            forced = scale_exp.get(p.name) if isinstance(scale_exp, dict) else int(scale_exp)
        if forced is not None:
            fp, qc, viol = pq.attempt(int(forced))
            if viol:
                _fail(*viol[:3], viol[3], int(forced))
        else:
            k_hi = int(math.floor(math.log2((VTH_MAX * 64 + 1) / pq.theta))) - 6
            for k in range(k_hi, k_hi - _K_SEARCH, -1):
                fp, qc, viol = pq.attempt(k)
                if not viol:
                    break
            else:
                _fail(*viol[:3], viol[3], k)
        pops[p.name] = fp
        conns.update(qc)
        report.append(_pop_row(p, fp, bias_bound is not None))
        for c in ins:
            report.append(_conn_row(c, qc[c.name], p, fp))
    return FixedParams(pops, conns, report, float(input_bound), netx)


def _pop_row(p, fp: FixedPop, per_sample: bool) -> dict:
    unit = 2.0 ** -(fp.k + 6)
    theta = _theta(p)
    eff_theta = (64 * fp.vth + 1) * unit
    eff_bias = (fp.bias_mant << fp.bias_exp) * unit
    return {"layer": p.name, "kind": "population", "graph_node": p.node, "scale_exp": fp.k,
            "du": fp.du, "dv": fp.dv, "decay": p.dv, "decay_error": abs(fp.dv / DECAY_UNITY - p.dv),
            "vth": fp.vth, "threshold": theta, "threshold_error": abs(eff_theta - theta),
            "bias_max_abs_error": float(np.abs(eff_bias - p.bias).max(initial=0.0)),
            "bias_exp_max": int(fp.bias_exp.max(initial=0)),
            # direct-input current W x + b: float64 on the host, rounded per sample to
            # bias_mant << bias_exp (sample_bias); bias_max_abs_error covers only the constant part
            "per_sample_bias": per_sample}


def _conn_row(c, q: FixedConn, p, fp: FixedPop) -> dict:
    to_graph = 2.0 ** -fp.k / p.scale          # a_in units -> the graph's weight units
    w = _vals(c.weight) / p.scale                # (CSR: stored values only, same structure)
    err = np.abs(_vals(_effective(q)) * to_graph - w)
    wmax = float(np.abs(w).max(initial=0.0))
    mx = float(err.max(initial=0.0))
    return {"layer": c.name, "kind": "dense", "role": c.role, "graph_nodes": list(c.nodes), "dst": p.name,
            "weight_exp": q.weight_exp, "sign_mode": q.sign_mode,
            "step": 2.0 ** (q.weight_exp + (q.sign_mode == "mixed")) * to_graph,
            "max_abs_weight": wmax, "max_abs_error": mx, "rel_error": mx / wmax if wmax else 0.0,
            "mean_abs_error": float(err.mean()) if err.size else 0.0, "clipped": q.clipped,
            "process": q.kind}


def quantize(graph, input_bound: float = 1.0, scale_exp=None, graded: bool = False) -> FixedParams:
    """Pure function: graph -> quantised fixed-point parameters (with a per-layer report)."""
    return quantize_plan(graph, lb.lower(graph, graded=graded), input_bound, scale_exp)


def lower_fixed(graph, input_bound: float = 1.0, scale_exp=None, graded: bool = False, netx: bool = False):
    """The float LavaPlan with its ``fixed`` parameters attached and precision 'fixed_pt'
    (``graded``: spike counts as graded messages, as in lava_backend.lower; ``netx``: netx's
    integer conventions, see the module docstring)."""
    plan = lb.lower(graph, graded=graded)
    for p in plan.pops.values():
        if p.role == "neuron" and p.du != 1.0:
            raise lb.LoweringError(f"node {p.node!r}: the current-based LIF (tau_syn > 1) is lowered to Lava "
                                   f"float only, not fixed point")
    plan.fixed = quantize_plan(graph, plan, input_bound, scale_exp, netx)
    plan.precision = "fixed_pt"
    return plan


def sample_bias(plan, target: str, value: np.ndarray, sample: int):
    """A per-sample float bias (plan units) of population ``target`` -> (bias_mant, bias_exp)."""
    fp = plan.fixed.pops[target]
    bv = np.rint(np.asarray(value, dtype=np.float64) * 2.0 ** (fp.k + 6))
    if plan.fixed.netx:
        mant, exp, fits = _netx_bias(np.asarray(value, dtype=np.float64) * 2.0 ** fp.k)
    else:
        mant, exp, fits = _split_bias(bv)
    if not fits.all():
        i = int(np.argmin(fits))
        raise LoweringError(f"fixed point: per-sample input bias of population {target!r} (sample {sample}, "
                            f"neuron {i}) = {float(value[i]):.6g} is {int(bv[i])} at scale 2^{fp.k}, beyond "
                            f"Lava's range bias_mant {BIAS_MANT[0]}..{BIAS_MANT[1]} << bias_exp "
                            f"0..{BIAS_EXP_MAX} (input larger than input_bound={plan.fixed.input_bound}?)")
    return mant, exp


# -- Lava process arguments -------------------------------------------------------------------
def lava_lif_kwargs(plan, name: str) -> dict:
    fp = plan.fixed.pops[name]
    return dict(du=int(fp.du), dv=int(fp.dv), vth=int(fp.vth), bias_mant=fp.bias_mant.astype(np.int32).copy(),
                bias_exp=fp.bias_exp.astype(np.int32).copy())


def lava_dense_kwargs(plan, name: str) -> dict:
    """Arguments of a lava Dense (ndarray weights) or Sparse (CSR weights): both bit-accurate
    models clip/truncate the weights and shift the sum by weight_exp the same way."""
    from lava.utils.weightutils import SignMode
    q = plan.fixed.conns[name]
    w = q.weight.astype(np.int32) if sparse.issparse(q.weight) else q.weight.astype(np.int32).copy()
    return dict(weights=w, weight_exp=int(q.weight_exp), num_weight_bits=8,
                sign_mode=SignMode[q.sign_mode.upper()])


def lava_conv_kwargs(plan, name: str) -> dict:
    """Arguments of a lava Conv in fixed point. Lava 0.10's PyConvModelFixed ignores weight_exp
    and num_weight_bits (it computes a plain integer conv, then wraps a_buf to 24 signed bits),
    so the exponent is applied here: weight = lava_weights(mantissa) << weight_exp with
    weight_exp >= 0 (the quantiser never gives a Conv a negative exponent: a floor shift has no
    Conv equivalent) and Lava's weight_exp = 0. The effective integer weights equal those a
    Dense with (mantissa, weight_exp) would use; they exceed 8 bits when weight_exp > 0."""
    q = plan.fixed.conns[name]
    assert q.kind == "conv" and q.weight_exp >= 0
    w = _lava_weights(q.weight, q.sign_mode) << q.weight_exp
    return dict(weight=lb.lava_kernel(w).astype(np.int32), weight_exp=0, num_weight_bits=8)


# -- the integer reference ----------------------------------------------------------------------
def _wrap32(x):
    return ((np.asarray(x, dtype=np.int64) + 2 ** 31) % 2 ** 32) - 2 ** 31


def _wrap24(x):
    """lava.proc.conv.utils.signed_clamp(x, 24): PyConvModelFixed's a_buf wrap."""
    return ((np.asarray(x, dtype=np.int64) + 2 ** 23) % 2 ** 24) - 2 ** 23


def _decay(x, d):
    """sign(x d) * (|x d| >> 12), int64 (Lava's decay: truncation toward zero)."""
    y = x * d
    return np.sign(y) * (np.abs(y) >> 12)


def simulate(plan, steps: int, batch: int, source: np.ndarray | None = None, biases: dict | None = None) -> dict:
    """Run the fixed-point plan with Lava's integer arithmetic (module docstring), all samples in
    parallel from zero state. source: (B, n_src, steps) 0/1; biases: {pop: (mant, exp)} with
    (B, n) arrays. Returns {pop name: (B, n, steps) uint8 spikes} (graded populations: int32
    graded values, the spike counts they send)."""
    fx = plan.fixed
    biases = biases or {}
    pops = list(plan.pops.values())
    W = {c.name: _lava_weights(fx.conns[c.name].weight, fx.conns[c.name].sign_mode) for c in plan.conns}
    E = {c.name: fx.conns[c.name].weight_exp for c in plan.conns}
    for c in plan.conns:    # lava Conv: pre-shifted weights, no shift of the sum (lava_conv_kwargs)
        if c.kind == "conv":
            W[c.name], E[c.name] = W[c.name] << E[c.name], 0
    eff_bias = {}
    for p in pops:
        mant, exp = biases.get(p.name, (fx.pops[p.name].bias_mant, fx.pops[p.name].bias_exp))
        mant, exp = np.asarray(mant, np.int64), np.asarray(exp, np.int64)
        eff_bias[p.name] = _wrap32(np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0)))
    u = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
    v = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
    a_buff = {c.name: np.zeros((batch, c.out_size), np.int64) for c in plan.conns}
    out = {p.name: np.zeros((batch, p.size, steps), np.int32 if p.graded else np.uint8) for p in pops}
    src_name = plan.source["name"] if plan.source else None
    for t in range(steps):
        a_in = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
        for c in plan.conns:                       # Dense sends last step's buffer
            a_in[c.dst] = _wrap32(a_in[c.dst] + _wrap32(a_buff[c.name]))
        spikes = {}
        for p in pops:
            if p.graded:   # GradedVec (vth 0): v = a_in; sends v * (|v| > 0) = v, a graded spike
                spikes[p.name] = a_in[p.name]
                out[p.name][:, :, t] = a_in[p.name]
                continue
            q = fx.pops[p.name]
            act = _wrap32(a_in[p.name] << 6)
            cur = _wrap32(_decay(u[p.name], DECAY_UNITY - (q.du + 1)) + act)
            wrapped = np.where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
            wrapped = np.where(wrapped <= -UV_MAX, cur + 2 * UV_MAX, wrapped)
            u[p.name] = wrapped
            vv = _wrap32(_decay(v[p.name], DECAY_UNITY - q.dv) + wrapped + eff_bias[p.name])
            vv = np.clip(vv, -UV_MAX + 1, UV_MAX - 1)
            s = vv > (q.vth << 6)
            vv[s] = 0
            v[p.name] = vv
            spikes[p.name] = s
            out[p.name][:, :, t] = s
        if src_name is not None:
            spikes[src_name] = source[:, :, t] != 0
        for c in plan.conns:                       # then accumulates this step's spikes
            s_in = spikes[c.src].astype(np.int64)
            if c.kind == "conv":                   # integer conv (exact in float64), 24-bit wrap
                acc = np.rint(_conv_apply(s_in, W[c.name], c.conv)).astype(np.int64)
                a_buff[c.name] = _wrap24(acc)
                continue
            acc = np.asarray((W[c.name] @ s_in.T).T) if sparse.issparse(W[c.name]) else s_in @ W[c.name].T
            e = E[c.name]
            a_buff[c.name] = acc << e if e > 0 else acc >> -e
    return out


def run_integer(graph, x, timesteps: int, plan=None, record: bool = False, input_bound: float = 1.0,
                graded: bool = False):
    """The integer reference run of ``graph`` (or of a given fixed ``plan``): same inputs, same
    per-sample bias quantisation and same readout replay as lava_backend.run(fixed_point=True)."""
    from snncc.runtime import RunResult, check_input
    x = check_input(graph, x, timesteps)
    if plan is None:
        plan = lower_fixed(graph, input_bound=input_bound, graded=graded)
    types = graph.infer()
    (inp,) = graph.input_nodes
    direct = x.ndim == 1 + len(types[inp].shape)
    batch = x.shape[0]
    steps = plan.steps_per_sample(timesteps)
    static = lb._static_values(graph, plan, x) if direct else {}
    biases = {}
    for d in plan.dyns:
        qs = [sample_bias(plan, d.target, lb._dyn_value(d, static, b), b) for b in range(batch)]
        biases[d.target] = (np.stack([m for m, _ in qs]), np.stack([e for _, e in qs]))
    source = None
    if plan.source:
        source = np.zeros((batch, plan.source["size"], steps), np.int64)
        source[:, :, :timesteps] = np.asarray(x).reshape(batch, timesteps, -1).transpose(0, 2, 1) != 0
    raw = simulate(plan, steps, batch, source, biases)
    trains = {}
    for name, data in raw.items():
        p = plan.pops[name]
        if p.node is None or p.role != "neuron":
            continue
        cols = data[:, :, p.depth: p.depth + timesteps]          # (B, n, T)
        trains[p.node] = cols.transpose(2, 0, 1).astype(np.uint8).reshape(timesteps, batch, *types[p.node].shape)
    activity, output = lb._replay(graph, x, trains, timesteps, direct)
    return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                     trains=trains if record else {})

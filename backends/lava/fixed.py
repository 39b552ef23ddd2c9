"""Fixed-point (bit-accurate) lowering for Lava: quantisation and an independent integer reference.

This package part turns the float :class:`~snncc.backends.lava.plan.LavaPlan` (same processes,
same alignment/relays/clock chain, same one-step Dense delay) into the integer parameters of
Lava's bit-accurate models (``Loihi2SimCfg(select_tag="fixed_pt")``: ``PyLifModelBitAcc`` and
``PyDenseModelBitAcc``, lava-nc 0.10), and simulates those integer models itself with numpy
so that the two can be compared spike for spike. Modules: :mod:`.quant` (ranges and weight
quantisation), :mod:`.quantizer` (the scale search, ``lower_fixed``), this module (the parameters
and the Lava process arguments built from them), :mod:`.integer` (the integer reference).

Lava's bit-accurate arithmetic (read from lava/proc/{dense,lif}/models.py and
lava/utils/weightutils.py; reproduced exactly by :func:`.integer.simulate`, int64 with explicit wraps)
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
The float plan (see :mod:`snncc.backends.lava`) already has w' = w (1 - 1/tau) + g x with the currents g x
folded into its weights and biases (g the input gain: 1/tau, or 1 for the LIF without input decay; / tau_syn
for the current-based LIF) and a threshold theta = v_th - v_reset. Each neuron
population P gets a power-of-two scale 2^k (``scale_exp`` k): one a_in unit is 2^-k, one
v unit is 2^-(k+6) in float units. Then

    du  = 4095             u = a_in << 6: u carries only this step's input (exact)
          (CUBA, tau_syn > 1: du = round(4096 / tau_syn) - 1, so u decays by (du + 1)/4096 per step,
          exactly 1/tau_syn when 4096/tau_syn is an integer; the worst-case input bound below
          becomes |a_in| <= 32 (du + 1) - 1, so that u, at most 64 |a_in| 4096 / (du + 1), never wraps)
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
  processes, pool matrices from matrices.pool_matrix_sparse), a strided/padded CNN with a
  downsample conv, an identity shortcut and a pool-folded (Toeplitz) conv (tests/test_lava_conv.py), a spike-input CNN, a recurrent IF net
  with hard reset and a clock-fed synapse bias, a spike-residual net with relays, a two-block
  SEW net with graded spikes (tests/test_lava_graded.py).
* Exact w.r.t. the float network: the structure, alignment and delays; OR pooling, relays, the
  clock chain; u (du = 4095); IF integration; LIF leak when 4096/tau is an integer (tau = 2); the
  CUBA current's decay when 4096/tau_syn is an integer (its truncation toward zero each step is
  not: < 1 u unit per step, like the leak's).
* Not exact w.r.t. the float network: 8-bit weights (error <= step/2 per weight, reported), the
  floor of the summed input when e < 0, thresholds (+-32 v units), leaks (dv rounding and the
  per-step truncation of v (4096 - dv) / 4096 toward zero, < 1 v unit per step), biases
  (<= 0.5 2^bias_exp v units), v saturation at +-(2^23 - 1) (e.g. a strongly inhibited IF
  neuron), and the direct-encoded analog input: its current W x + b (first layer) is computed
  on the host in float64 with the reference's own rules, exactly as in the float lowering, and
  only then rounded per sample and per neuron to bias_mant * 2^bias_exp (13-bit mantissa:
  relative error <= 2^-13 once the exponent is > 0, absolute <= 0.5 v unit otherwise). It is not
  an on-chip integer product W x; both Lava and :func:`run_integer` receive the same integers.
* lava Conv (the lowering maps spike-reading convs to it): Lava 0.10's PyConvModelFixed
  ignores ``weight_exp`` and ``num_weight_bits`` (checked: it computes a plain integer conv
  of the weights as given, no lowest-bit truncation, then wraps a_buf to 24 signed bits). So a
  Conv is quantised like a Dense (same mantissa, same sign-mode truncation) but its exponent is
  restricted to e >= 0 and applied by pre-shifting the weights (``FixedParams.conv_kwargs``: Lava gets
  weight_exp = 0); the effective integer weights are then exactly the Dense ones and the sums
  are exact. A Conv whose weights would want e < 0 (weights below ~1/1000 of the threshold)
  gets e = 0: exact w.r.t. the integer reference, fewer mantissa bits (the report shows the
  error). :func:`simulate` computes the conv with torch (float64, exact for these integers),
  independent of Lava's scipy code, including the 24-bit wrap (never reached: |a_in| bound).
  Sparse (identity/relay/OR windows) uses Lava's PySparseModelBitAcc: same arithmetic as Dense.
* A direct-encoded input reaching a population deeper than depth 0 (a per-sample *Dense
  weight* in the float plan) is refused: its weight exponent would depend on the sample.
* Soft reset stays refused (as in the float lowering).
* netx mode (``lower_fixed(graph, netx=True)``, used by :mod:`snncc.backends.lava.netx` for the
  lava-dl netx HDF5 export): the same quantiser under netx's conventions, so that the integers a
  netx file holds *are* this plan's parameters: every synapse into a neuron population has
  weight_exp 0 (netx weights are plain integers; netx's loader finds the exponent itself), so
  the scale search goes down from the threshold-limited k until the largest weight fits the
  8-bit mantissa at e = 0; every neuron bias (constant or per-sample) has bias_exp 6 (netx's
  fixed bias exponent): bias_mant = rint(b 2^k), one rounding. Clock-fed synapse biases of
  deeper populations are Dense weights at e = 0, i.e. the same integer in a_in units as a netx
  bias_mant << 6 in v units.
* Graded spikes (``lower_fixed(graph, graded=True)``; a SEW spike ADD lowered to a GradedVec,
  see :mod:`snncc.backends.lava`): supported bit-exactly. Lava's GradedVec has a fixed_pt model
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

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from snncc.backends.lava.matrices import lava_kernel
from snncc.backends.lava.plan import ConnKind, LoweringError, PopRole
from snncc.backends.lava.quant import BIAS_EXP_MAX, BIAS_MANT, SignMode, lava_weights, netx_bias, split_bias

__all__ = ["FixedPop", "FixedConn", "FixedParams", "sample_bias", "lava_lif_kwargs", "lava_dense_kwargs",
           "lava_conv_kwargs"]


@dataclass
class FixedPop:
    name: str
    role: PopRole
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
    sign_mode: SignMode
    clipped: int = 0
    kind: ConnKind = ConnKind.DENSE   # sparse: CSR weight; conv: kernel, weight_exp >= 0 pre-shifted


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
                             if c.kind is ConnKind.CONV else {})
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
                lines.append(f"  {ConnKind(r['process']).lava_name:<6} {r['layer']:<22} e={r['weight_exp']:<3} {r['sign_mode']:<10} "
                             f"max|w|={r['max_abs_weight']:.4g} max err={r['max_abs_error']:.3g} "
                             f"rel={r['rel_error']:.3g} clipped={r['clipped']}")
        return "\n".join(lines)

    # -- the process arguments (the interface FloatParams also implements, see build.py) ----
    dtype = np.int32
    source_dtype = np.int32

    def lif_kwargs(self, plan, p) -> dict:
        return lava_lif_kwargs(plan, p.name)

    def dense_kwargs(self, plan, c) -> dict:
        return lava_dense_kwargs(plan, c.name)

    def conv_kwargs(self, plan, c) -> dict:
        return lava_conv_kwargs(plan, c.name)

    def dyn_values(self, plan, d, value, sample: int) -> list:
        """A per-sample bias: its quantised bias_mant and bias_exp."""
        return list(zip(("bias_mant", "bias_exp"), sample_bias(plan, d.target, value, sample)))


def sample_bias(plan, target: str, value: np.ndarray, sample: int):
    """A per-sample float bias (plan units) of population ``target`` -> (bias_mant, bias_exp)."""
    fp = plan.fixed.pops[target]
    bv = np.rint(np.asarray(value, dtype=np.float64) * 2.0 ** (fp.k + 6))
    if plan.fixed.netx:
        mant, exp, fits = netx_bias(np.asarray(value, dtype=np.float64) * 2.0 ** fp.k)
    else:
        mant, exp, fits = split_bias(bv)
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
    from lava.utils.weightutils import SignMode as LavaSignMode
    q = plan.fixed.conns[name]
    w = q.weight.astype(np.int32) if sparse.issparse(q.weight) else q.weight.astype(np.int32).copy()
    return dict(weights=w, weight_exp=int(q.weight_exp), num_weight_bits=8,
                sign_mode=LavaSignMode[SignMode(q.sign_mode).name])


def lava_conv_kwargs(plan, name: str) -> dict:
    """Arguments of a lava Conv in fixed point. Lava 0.10's PyConvModelFixed ignores weight_exp
    and num_weight_bits (it computes a plain integer conv, then wraps a_buf to 24 signed bits),
    so the exponent is applied here: weight = lava_weights(mantissa) << weight_exp with
    weight_exp >= 0 (the quantiser never gives a Conv a negative exponent: a floor shift has no
    Conv equivalent) and Lava's weight_exp = 0. The effective integer weights equal those a
    Dense with (mantissa, weight_exp) would use; they exceed 8 bits when weight_exp > 0."""
    q = plan.fixed.conns[name]
    assert q.kind is ConnKind.CONV and q.weight_exp >= 0
    w = lava_weights(q.weight, q.sign_mode) << q.weight_exp
    return dict(weight=lava_kernel(w).astype(np.int32), weight_exp=0, num_weight_bits=8)


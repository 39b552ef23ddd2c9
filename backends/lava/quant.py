"""Loihi fixed-point arithmetic pieces: Lava's integer ranges, weight quantisation and what
Lava's bit-accurate models do to the weights (:mod:`.fixed` explains the arithmetic)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from snncc.ir.types import StrEnum

__all__ = ["SignMode", "DECAY_UNITY", "DU_MAX", "VTH_MAX", "UV_MAX", "BIAS_MANT", "BIAS_EXP_MAX",
           "WEIGHT_EXP", "MANT", "NETX_BIAS_EXP", "current_du", "a_in_max", "vals", "map_values", "sign_mode",
           "quant_weights", "lava_weights", "conv_apply", "row_pos_neg", "split_bias", "netx_bias"]


class SignMode(StrEnum):
    """Lava's weight sign modes (lava.utils.weightutils.SignMode)."""
    MIXED = "mixed"
    EXCITATORY = "excitatory"
    INHIBITORY = "inhibitory"


DECAY_UNITY = 4096           # 12-bit decays
DU_MAX = 4095
VTH_MAX = 2 ** 17 - 1        # 17-bit unsigned threshold (left-shifted by 6)
UV_MAX = 2 ** 23             # 24-bit u, v
BIAS_MANT = (-4096, 4095)    # 13-bit signed
BIAS_EXP_MAX = 7             # 3-bit
WEIGHT_EXP = (-8, 7)
MANT = {SignMode.MIXED: (-128, 127), SignMode.EXCITATORY: (0, 255), SignMode.INHIBITORY: (-255, 0)}
NETX_BIAS_EXP = 6            # netx builds every LIF with bias_exp = 6


def current_du(decay: float) -> int | None:
    """Lava's 12-bit ``du`` for a float current decay (the plan's du: 1, or 1/tau_syn for CUBA).
    Lava decays u by (du + 1)/4096 per step (ds_offset 1), so du = round(4096 decay) - 1; None when
    that is below 0 (a decay under 1/8192: u would never decay)."""
    if decay == 1.0:
        return DU_MAX
    du = int(np.rint(decay * DECAY_UNITY)) - 1
    return du if 0 <= du <= DU_MAX else None


def a_in_max(du: int) -> int:
    """The largest per-step |a_in| with which u never wraps at 24 bits. With d = du + 1,
    u' = trunc(u (4096 - d) / 4096) + 64 a_in stays within the geometric sum 64 A 4096 / d for
    |a_in| <= A; Lava wraps u > 2^23 and u <= -2^23, so A = 32 d - 1 keeps |u| < 2^23
    (d = 4096, no current state: 2^17 - 1, u = a_in << 6 < 2^23)."""
    return 32 * (du + 1) - 1


def vals(w) -> np.ndarray:
    """The stored values of a weight: a dense matrix, a conv kernel, or a CSR matrix's data."""
    return w.data if sparse.issparse(w) else np.asarray(w)


def map_values(w, f):
    """Apply an element-wise function to a weight's stored values (CSR structure kept)."""
    if sparse.issparse(w):
        out = w.copy()
        out.data = f(w.data)
        return out
    return f(np.asarray(w))


def sign_mode(w) -> SignMode:
    w = vals(w)
    if np.any(w > 0) and np.any(w < 0):
        return SignMode.MIXED
    return SignMode.INHIBITORY if np.any(w < 0) else SignMode.EXCITATORY


def quant_weights(w_a, mode: SignMode, min_exp: int = WEIGHT_EXP[0]):
    """w_a in a_in units (dense, CSR or a conv kernel) -> (Lava weights, e, clipped, e wanted
    before clamping). ``min_exp`` = 0 for lava Conv (no floor shift available, see
    :meth:`.fixed.FixedParams.conv_kwargs`)."""
    mode = SignMode(mode)
    lo, hi = MANT[mode]
    mixed = int(mode is SignMode.MIXED)
    w_s, w_a = w_a, vals(w_a)
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
    return map_values(w_s, lambda _: m), e, clipped, wanted


def lava_weights(w, mode: SignMode):
    """What PyDenseModelBitAcc / PySparseModelBitAcc do to the weights once (clip_weights +
    truncate_weights); FixedParams.conv_kwargs applies the same to Conv kernels itself."""
    mode = SignMode(mode)
    def f(w):
        w = np.asarray(w, dtype=np.int64)
        if mode is SignMode.MIXED:
            return (np.clip(w, -256, 255) >> 1) << 1
        if mode is SignMode.INHIBITORY:
            return -np.clip(-w, 0, 255)
        return np.clip(w, 0, 255)
    return map_values(w, f)




def conv_apply(x: np.ndarray, kernel: np.ndarray, cv: dict) -> np.ndarray:
    """conv2d of (B, C*H*W) C-order vectors with a (C_out, C_in / groups, kh, kw) kernel -> (B, out) float64
    (exact for integer operands below 2^53)."""
    ci, h, w = cv["in_shape"]
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, ci, h, w))
    out = F.conv2d(xt, torch.as_tensor(np.asarray(kernel, dtype=np.float64)),
                   stride=tuple(cv["stride"]), padding=tuple(cv["padding"]), dilation=tuple(cv["dilation"]),
                   groups=int(cv["groups"]))
    return out.numpy().reshape(xt.shape[0], -1)


def row_pos_neg(eff, conv: dict | None):
    """Per destination neuron: sum of the positive / of the negative incoming weights."""
    if conv is not None:   # all-ones input: kernel summed over its (group's) C_in, times the in-bounds masks
        _, h, w = conv["in_shape"]
        _, ho, wo = conv["out_shape"]
        kh, kw = eff.shape[2:]
        (sy, sx), (py, px), (dy, dx) = conv["stride"], conv["padding"], conv["dilation"]
        iy = np.arange(ho)[None, :] * sy - py + np.arange(kh)[:, None] * dy
        ix = np.arange(wo)[None, :] * sx - px + np.arange(kw)[:, None] * dx
        vy = ((iy >= 0) & (iy < h)).astype(np.float64)         # (kh, ho)
        vx = ((ix >= 0) & (ix < w)).astype(np.float64)         # (kw, wo)

        def f(k):
            return np.einsum("ckl,ky,lx->cyx", k.sum(axis=1), vy, vx).ravel()
        return f(np.maximum(eff, 0)), f(np.maximum(-eff, 0))
    if sparse.issparse(eff):
        return (np.asarray(eff.maximum(0).sum(axis=1)).ravel(), np.asarray((-eff).maximum(0).sum(axis=1)).ravel())
    return np.where(eff > 0, eff, 0).sum(axis=1), np.where(eff < 0, -eff, 0).sum(axis=1)


def split_bias(bv: np.ndarray):
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


def netx_bias(b_k: np.ndarray):
    """netx: biases in a_in units (b 2^k) -> (mant, exp = 6, fits): one rounding."""
    mant = np.rint(np.asarray(b_k, dtype=np.float64))
    fits = (mant >= BIAS_MANT[0]) & (mant <= BIAS_MANT[1])
    return (np.clip(mant, *BIAS_MANT).astype(np.int64), np.full(mant.shape, NETX_BIAS_EXP, np.int64), fits)


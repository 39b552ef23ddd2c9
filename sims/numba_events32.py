"""The event-driven conv gather with float32 accumulators (for synapses on the float32 path of
:mod:`snncc.sims.numba_f32`): the same events and weights as ``conv_events``, products and sums in float32
(twice the SIMD width), the accumulators starting at 0 and the bias added in float64 when written out, so
each current is a float32 sum of its active products and the error bound of numba_f32 applies unchanged."""
from __future__ import annotations

import numba
import numpy as np

from snncc.sims.numba_kernels import conv_src, vector_sum

if __name__ not in ("snncc.sims.numba_events32", "__main__"):
    raise ImportError(f"import this module as snncc.sims.numba_events32, not {__name__}")

__all__ = ["conv_events32"]
_jit = numba.njit(cache=True, nogil=True)


@_jit
def _gather32(acc, xr, idx, q0, q1, p, hw, w_tap):
    """acc += x * w_tap[k] for the active channels k = idx[p, q0:q1] of input pixel p, in float32."""
    q = q0
    while q + 4 <= q1:
        ka, kb, kc, kd = idx[p, q], idx[p, q + 1], idx[p, q + 2], idx[p, q + 3]
        a, b, c, d = w_tap[ka], w_tap[kb], w_tap[kc], w_tap[kd]
        xa, xb = np.float32(xr[ka * hw + p]), np.float32(xr[kb * hw + p])
        xc, xd = np.float32(xr[kc * hw + p]), np.float32(xr[kd * hw + p])
        for j in range(acc.size):
            acc[j] = acc[j] + xa * a[j] + xb * b[j] + xc * c[j] + xd * d[j]
        q += 4
    while q < q1:
        k = idx[p, q]
        a = w_tap[k]
        xa = np.float32(xr[k * hw + p])
        for j in range(acc.size):
            acc[j] = acc[j] + xa * a[j]
        q += 1


@_jit
def conv_events32(r0, r1, x, w_g, bias, out, h, w, ho, wo, sh, sw, ph, pw, dh, dw, c_grp):
    """conv_events (same arguments; w_g float32) with float32 accumulators. Returns the sum of out[r0:r1]."""
    kh, kw, c_in, c_og = w_g.shape
    groups, hw = c_in // c_grp, h * w
    idx = np.empty((hw, c_in), np.int32)
    cnt = np.empty(hw, np.int32)
    ends = np.zeros((groups + 1, hw), np.int32)
    acc = np.empty((ho * wo, bias.size), np.float32)
    total = 0.0
    for r in range(r0, r1):
        xr = x[r]
        cnt[:] = 0
        for g in range(groups):
            for ci in range(g * c_grp, (g + 1) * c_grp):
                for p in range(hw):
                    idx[p, cnt[p]] = ci
                    cnt[p] += xr[ci * hw + p] != 0.0
            ends[g + 1] = cnt
        for oy in range(ho):
            for ox in range(wo):
                a = acc[oy * wo + ox]
                a[:] = 0.0
                for ky in range(kh):
                    iy = conv_src(oy, ky, sh, ph, dh, h)
                    if iy < 0:
                        continue
                    for kx in range(kw):
                        ix = conv_src(ox, kx, sw, pw, dw, w)
                        if ix < 0:
                            continue
                        p = iy * w + ix
                        if groups == 1:
                            _gather32(a, xr, idx, 0, cnt[p], p, hw, w_g[ky, kx])
                            continue
                        for g in range(groups):
                            _gather32(a[g * c_og:(g + 1) * c_og], xr, idx, ends[g, p], ends[g + 1, p], p, hw,
                                      w_g[ky, kx])
        for co in range(bias.size):
            for q in range(ho * wo):
                out[r, co * ho * wo + q] = np.float64(acc[q, co]) + bias[co]
        total += vector_sum(out[r])
    return total

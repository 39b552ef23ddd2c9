"""Synapse matrices for the Lava lowering: unrolled (Toeplitz) convs, pooling windows,
identity paths, and the lava Conv kernel layout. All C-order over (C, H, W) vectors."""
from __future__ import annotations

import numpy as np
from scipy import sparse

from snncc.ir.ops import conv_out

__all__ = ["conv_fields", "conv_matrix_sparse", "conv_matrix", "pool_matrix_sparse", "lava_kernel", "identity",
           "as_matrix"]


def conv_fields(op) -> dict:
    """A Conv op's geometry as plain ints: what a Conn's ``conv`` dict carries besides its shapes."""
    return {"stride": tuple(int(v) for v in op.stride), "padding": tuple(int(v) for v in op.padding),
            "dilation": tuple(int(v) for v in op.dilation), "groups": int(op.groups)}


def _windows(shape, kernel, stride, padding, dilation=(1, 1)):
    """(rows, cols, k-index) of every in-bounds (output, input) pair of a 2-D window op."""
    c, h, w = shape
    kh, kw = kernel
    ho = conv_out(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_out(w, kw, stride[1], padding[1], dilation[1])
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    for ky in range(kh):
        for kx in range(kw):
            iy = oy * stride[0] - padding[0] + ky * dilation[0]
            ix = ox * stride[1] - padding[1] + kx * dilation[1]
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            yield ky, kx, (oy[ok] * wo + ox[ok]), (iy[ok] * w + ix[ok]), ho * wo


def conv_matrix_sparse(weight, shape, stride, padding, dilation=(1, 1), groups=1) -> sparse.csr_matrix:
    """Unrolled conv as CSR: M @ x.ravel() == conv2d(x, weight).ravel() (C-order, no bias).
    Vectorised: one COO block per kernel offset (no out_size x in_size dense array)."""
    weight = np.asarray(weight, dtype=np.float64)
    c_out, c_grp, kh, kw = weight.shape
    c, h, w = shape
    rows, cols, vals, hw_out = [], [], [], 0
    co = np.arange(c_out)[:, None, None]
    ci = (co // (c_out // groups)) * c_grp + np.arange(c_grp)[None, :, None]  # output channel's input group
    for ky, kx, r, cl, hw_out in _windows(shape, (kh, kw), stride, padding, dilation):
        full = (c_out, c_grp, r.size)
        rows.append(np.broadcast_to(co * hw_out + r[None, None, :], full).ravel())
        cols.append(np.broadcast_to(ci * (h * w) + cl[None, None, :], full).ravel())
        vals.append(np.broadcast_to(weight[:, :, ky, kx][:, :, None], full).ravel())
    return sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(c_out * hw_out, c * h * w)).tocsr()


def conv_matrix(weight, shape, stride, padding, dilation=(1, 1), groups=1) -> np.ndarray:
    """Unrolled conv: M @ x.ravel() == conv2d(x, weight).ravel() (C-order, no bias); dense."""
    return conv_matrix_sparse(weight, shape, stride, padding, dilation, groups).toarray()


def pool_matrix_sparse(shape, kernel, stride, padding, value) -> sparse.csr_matrix:
    c, h, w = shape
    rows, cols, hw_out = [], [], 0
    ch = np.arange(c)[:, None]
    for _, _, r, cl, hw_out in _windows(shape, kernel, stride, padding):
        rows.append((ch * hw_out + r[None, :]).ravel())
        cols.append((ch * (h * w) + cl[None, :]).ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sparse.coo_matrix((np.full(rows.size, float(value)), (rows, cols)),
                             shape=(c * hw_out, c * h * w)).tocsr()



def lava_kernel(weight: np.ndarray) -> np.ndarray:
    """snncc/torch conv weight (C_out, C_in, kh, kw), cross-correlation -> lava Conv weight
    (C_out, X, Y, C_in) with X = H, Y = W. Lava's CPU conv (scipy convolve2d) is a true
    convolution, so the kernel is flipped in both spatial axes."""
    return np.ascontiguousarray(np.asarray(weight)[:, :, ::-1, ::-1].transpose(0, 2, 3, 1))


def identity(n: int) -> sparse.csr_matrix:
    return sparse.identity(n, dtype=np.float64, format="csr")


def as_matrix(m, note: str, max_entries: int):
    """(weight, kind, note): CSR kept sparse when large, else a dense ndarray."""
    if sparse.issparse(m):
        if m.shape[0] * m.shape[1] <= max_entries:
            return m.toarray(), "dense", note
        return m.tocsr(), "sparse", note + f" (CSR: {m.shape[0]}x{m.shape[1]} too large for Dense)"
    return np.asarray(m, dtype=np.float64), "dense", note


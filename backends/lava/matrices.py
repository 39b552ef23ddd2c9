"""Synapse matrices for the Lava lowering: unrolled (Toeplitz) convs, pooling windows,
identity paths, and the lava Conv kernel layout. All C-order over (C, H, W) vectors."""
from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["conv_matrix_sparse", "conv_matrix", "pool_matrix_sparse", "lava_kernel", "identity", "as_matrix"]


def _windows(shape, kernel, stride, padding):
    """(rows, cols, k-index) of every in-bounds (output, input) pair of a 2-D window op."""
    c, h, w = shape
    kh, kw = kernel
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    for ky in range(kh):
        for kx in range(kw):
            iy = oy * stride[0] - padding[0] + ky
            ix = ox * stride[1] - padding[1] + kx
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            yield ky, kx, (oy[ok] * wo + ox[ok]), (iy[ok] * w + ix[ok]), ho * wo


def conv_matrix_sparse(weight, shape, stride, padding) -> sparse.csr_matrix:
    """Unrolled conv as CSR: M @ x.ravel() == conv2d(x, weight).ravel() (C-order, no bias).
    Vectorised: one COO block per kernel offset (no out_size x in_size dense array)."""
    weight = np.asarray(weight, dtype=np.float64)
    c_out, c_in, kh, kw = weight.shape
    c, h, w = shape
    rows, cols, vals, hw_out = [], [], [], 0
    co = np.arange(c_out)[:, None, None]
    ci = np.arange(c_in)[None, :, None]
    for ky, kx, r, cl, hw_out in _windows(shape, (kh, kw), stride, padding):
        full = (c_out, c_in, r.size)
        rows.append(np.broadcast_to(co * hw_out + r[None, None, :], full).ravel())
        cols.append(np.broadcast_to(ci * (h * w) + cl[None, None, :], full).ravel())
        vals.append(np.broadcast_to(weight[:, :, ky, kx][:, :, None], full).ravel())
    return sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(c_out * hw_out, c_in * h * w)).tocsr()


def conv_matrix(weight, shape, stride, padding) -> np.ndarray:
    """Unrolled conv: M @ x.ravel() == conv2d(x, weight).ravel() (C-order, no bias); dense."""
    return conv_matrix_sparse(weight, shape, stride, padding).toarray()


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


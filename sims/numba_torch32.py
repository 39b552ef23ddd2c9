"""Torch's float32 conv as the product of the float32 path (numba_f32): only where it is provably a plain sum.

The float32 path's bound (numba_f32, gamma32(m) * S) holds for any summation order, blocking or FMA use of
the exact products ``x_i w_i``; it does NOT hold for fast-convolution algorithms (Winograd, FFT), whose
transforms are not sums of the products. So torch's conv is used only when torch would run it with one of
these backends (``torch._C._select_conv_backend``, checked per input shape and cached):

* ``Mkldnn``: ATen calls oneDNN with ``algorithm::convolution_direct`` (never ``convolution_auto`` or
  ``convolution_winograd``); ``ONEDNN_VERBOSE=1`` shows ``alg:convolution_direct`` for every shape the
  bench runs (docs/methods.md). Its fp32 math mode must be plain fp32: torch's implicit bf16 / tf32
  down-conversion (``torch.backends.mkldnn...fp32_precision``, ``set_float32_matmul_precision``) is
  checked to be off, else the path is not used;
* ``Slow2d`` / ``SlowDilated2d``: im2col + sgemm.

A Dense product is ``torch.mm`` (sgemm: a plain blocked sum; the same precision check).

NNPACK (Winograd / FFT) is disabled during the call and, like every other backend, refused. Torch's
intra-op thread count is the simulator's thread setting during the call and restored afterwards.
"""
from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["available", "direct_conv", "conv_product", "mm_product"]

_PLAIN = {"Mkldnn", "Slow2d", "SlowDilated2d"}
_backend_cache: dict = {}


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the reference backend
        return None
    return torch


def _fp32_exact(torch) -> bool:
    """No implicit reduced-precision math for float32 convs / matmuls."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    for mod in (getattr(torch.backends.mkldnn, "conv", None), getattr(torch.backends.mkldnn, "matmul", None),
                torch.backends.mkldnn):
        prec = getattr(mod, "fp32_precision", "none") if mod is not None else "none"
        if prec not in ("none", "ieee"):
            return False
    return True


def available() -> bool:
    torch = _torch()
    return torch is not None and _fp32_exact(torch)


@contextlib.contextmanager
def _call_context(torch, threads: int):
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


def direct_conv(shape, wshape, stride, padding, dilation, groups) -> bool:
    """Whether torch runs this float32 conv as a plain sum of products (see the module doc)."""
    torch = _torch()
    if torch is None or not _fp32_exact(torch):  # checked every call: the settings are global and mutable
        return False
    key = (shape, wshape, stride, padding, dilation, groups)
    if key not in _backend_cache:
        try:  # an internal torch function: if another torch lacks it or changed it, use the numpy product
            with torch.backends.nnpack.flags(enabled=False):
                be = torch._C._select_conv_backend(torch.empty(shape), torch.empty(wshape), None, list(stride),
                                                   list(padding), list(dilation), False, [0, 0], groups, None)
        except (AttributeError, RuntimeError, TypeError):
            be = None
        _backend_cache[key] = str(be).rsplit(".", 1)[-1] in _PLAIN
    return _backend_cache[key]


def conv_product(d, x, o, threads, product_weights) -> bool:
    """o (R, C_out * P) = conv(x) + bias, the product by torch in float32, the bias added in float64.
    Returns False (o untouched) where torch would not run a plain direct / im2col conv."""
    h, w, ho, wo, sh, sw, ph, pw, dh, dw = d["dims"]
    kh, kw = d["kernel"]
    rows, c_in = x.shape[0], x.shape[1] // (h * w)
    groups, c_og = c_in // d["c_grp"], d["w_g"].shape[3]
    args = ((sh, sw), (ph, pw), (dh, dw), groups)
    if not direct_conv((rows, c_in, h, w), (groups * c_og, d["c_grp"], kh, kw), *args):
        return False
    wt = d.get("w_torch32")
    if wt is None:
        wg = product_weights(d["w_g"], d["c_grp"])  # (groups, C_out / groups, c_grp * kh * kw)
        wt = d["w_torch32"] = np.ascontiguousarray(wg.reshape(-1, d["c_grp"], kh, kw), dtype=np.float32)
    torch = _torch()
    with _call_context(torch, threads):
        xt = torch.from_numpy(x.astype(np.float32).reshape(rows, c_in, h, w))
        prod = torch.nn.functional.conv2d(xt, torch.from_numpy(wt), None, *args).numpy()
    c_out = wt.shape[0]
    np.add(prod.reshape(rows, c_out, ho * wo), d["bias"].reshape(-1, 1), out=o.reshape(rows, c_out, ho * wo))
    return True


def mm_product(x, w32, threads):
    """x (R, n_in) @ w32 (n_in, n_out) in float32 by torch.mm, or None where float32 math is not plain fp32."""
    torch = _torch()
    if torch is None or not _fp32_exact(torch):
        return None
    with _call_context(torch, threads):
        return torch.mm(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(w32)).numpy()

"""Importer rules for NIR's stateless nodes: Input, Output, Affine, Linear, Conv1d, Conv2d,
AvgPool2d, SumPool2d, Flatten, Scale, Delay. Each is ``rule(builder, name, nir_node)``."""
from __future__ import annotations

import numpy as np

from snncc.ir.graph import MAX_DELAY
from snncc.ir.ops import Conv, Dense, Flatten, Input, Pool, Readout
from snncc.ir.types import Kind, TensorType
from snncc.nir.reading import arr, fit, pair


def input_(b, n, m):
    shape = tuple(int(d) for d in np.asarray(m.input_type["input"]).reshape(-1))
    b.alias[n] = b.add(n, Input(shape, encoding=b.encoding))


def output(b, n, m):
    port = b.single(n)
    mode = "mean" if b.types[port.src].kind is Kind.ANALOG else "count"
    b.alias[n] = b.add(n, Readout(mode), [port])


def affine(b, n, m, bias=True):
    port = b.single(n)
    w = arr(m.weight)
    if w.ndim != 2:
        b.fail(n, f"weight of shape {list(w.shape)}: only 2-D (out, in) weights are supported")
    if len(b.types[port.src].shape) != 1:
        b.fail(n, f"input of shape {list(b.types[port.src].shape)}: NIR applies it to the last axis; "
                  f"snncc's Dense needs a vector (add a Flatten)")
    b.alias[n] = b.add(n, Dense(w, arr(m.bias).reshape(-1) if bias else None), [port])


def linear(b, n, m):
    affine(b, n, m, bias=False)


def _same_padding(b, n, kernel, stride, dilation):
    """NIR's padding 'same' as a symmetric padding: stride 1 and an odd dilated kernel."""
    spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(s != 1 for s in stride) or any(span % 2 for span in spans):
        b.fail(n, "padding 'same' needs stride 1 and an odd (dilated) kernel to be a symmetric padding")
    return tuple(span // 2 for span in spans)


def _conv(b, n, m, port, w, stride, dilation, padding):
    if isinstance(m.padding, str):
        padding = (0,) * len(stride) if m.padding == "valid" else _same_padding(b, n, w.shape[2:], stride, dilation)
    bias = None if m.bias is None else arr(m.bias).reshape(-1)
    if w.ndim == 3:  # a 1-D conv runs as the 2-D conv on (C, 1, L)
        w, stride, dilation, padding = w[:, :, None, :], (1, *stride), (1, *dilation), (0, *padding)
    b.alias[n] = b.add(n, Conv(w, bias, stride, padding, dilation, int(m.groups)), [port])


def conv2d(b, n, m):
    port = b.single(n)
    pad = None if isinstance(m.padding, str) else pair(m.padding, n, "padding")
    _conv(b, n, m, port, arr(m.weight), pair(m.stride, n, "stride"), pair(m.dilation, n, "dilation"), pad)


def conv1d(b, n, m):
    """Snncc's Conv on (C, 1, L): kernel (1, k), stride (1, s), padding (0, p), dilation (1, d)."""
    port = b.single(n)
    src = port.src
    shape = b.types[src].shape
    if len(shape) == 2 and isinstance(b.g.op(src), Input) and \
            all(isinstance(b.nodes[d], type(m)) for d in b.succ[b.nir_of(src)]):
        inp = b.g.op(src)  # present the (C, L) input as (C, 1, L); data of either shape is accepted
        b.g.replace_op(src, Input((shape[0], 1, shape[1]), encoding=inp.encoding))
        b.types[src] = TensorType(b.types[src].kind, (shape[0], 1, shape[1]))
    elif not (len(shape) == 3 and shape[1] == 1):
        b.fail(n, f"input of shape {list(shape)}: a 1-D convolution needs (C, L) from the input or "
                  f"another 1-D convolution")

    def one(x):
        return (int(np.asarray(arr(x)).reshape(-1)[0]),)
    pad = None if isinstance(m.padding, str) else one(m.padding)
    _conv(b, n, m, port, arr(m.weight), one(m.stride), one(m.dilation), pad)


def _pool(b, n, m, mode):
    port = b.single(n)
    kernel = pair(m.kernel_size, n, "kernel_size")
    stride = pair(m.stride, n, "stride") if m.stride is not None else kernel
    padding = pair(m.padding, n, "padding") if m.padding is not None else (0, 0)
    if mode == "avg" and padding != (0, 0):
        b.fail(n, "average pooling with padding: NIR does not say whether padding counts")
    b.alias[n] = b.add(n, Pool(mode, kernel, stride, padding), [port])


def avgpool2d(b, n, m):
    _pool(b, n, m, "avg")


def sumpool2d(b, n, m):
    _pool(b, n, m, "sum")


def flatten(b, n, m):
    port = b.single(n)
    shape = b.types[port.src].shape
    start, end = int(m.start_dim), int(m.end_dim)
    nd = len(shape)
    s, e = (start % nd, end % nd) if nd else (0, 0)
    if nd > 1 and not (s == 0 and e == nd - 1):
        b.fail(n, f"flattening axes {start}..{end} of {list(shape)} is partial; snncc's Flatten "
                  f"flattens the whole sample")
    b.alias[n] = b.add(n, Flatten(), [port])


def scale(b, n, m):
    """Folded into the rows of the synapse feeding only it."""
    port = b.single(n)
    op = b.owned_synapse(n, port)
    if op is None:
        b.fail(n, "Scale is folded into the synapse (Affine, Linear, Conv) feeding only it; "
                  "here it follows something else")
    shape = b.types[port.src].shape
    try:
        s = fit(arr(m.scale), shape)
    except ValueError:
        b.fail(n, f"scale of shape {list(np.shape(m.scale))} does not match {list(shape)}")
    b.fold_rows(port.src, b.row_values(n, s, op))
    b.alias[n] = port.src


def delay(b, n, m):
    """y(t) = x(t - d): the consumers read the source d steps late (a delayed edge; d = 0: a pass-through).
    Delays in a row add up."""
    port = b.single(n)
    steps = arr(m.delay).reshape(-1) / b.dt
    whole = np.rint(steps)
    if steps.size == 0 or not (np.abs(steps - whole) <= 1e-9 * np.maximum(whole, 1.0)).all() or (whole < 0).any():
        b.fail(n, f"delays of {sorted(set(np.round(steps, 6)))[:3]} steps: snncc edges delay by whole "
                  f"steps (dt={b.dt:g})")
    if not (whole == whole[0]).all():
        b.fail(n, f"delays of {sorted(set(whole.astype(int).tolist()))[:3]} steps: an snncc edge delays "
                  f"every element by the same number of steps")
    total = int(whole[0]) + port.delay
    if total > MAX_DELAY:
        b.fail(n, f"a delay of {total} steps exceeds snncc's {MAX_DELAY}")
    b.alias[n], b.delay_of[n] = port.src, total

"""The export rule table: which torch module becomes which spike-graph op.

``MODULE_RULES`` maps a module class to a function ``module -> op``; ``SHAPED_RULES`` to a function
``(module, in_shape) -> op`` for modules whose op depends on the per-sample shape they receive
(adaptive pooling, spikingjelly's VotingLayer); leaves that vanish at
inference (``IDENTITY``), batch norms (folded into the synapse before them, ``BN``) and containers
whose children are mapped in order (``CONTAINERS``) are listed beside it. Support for another
library's modules is added by :func:`register` (see :mod:`snncc.export.spikingjelly`).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from snncc.ir.ops import Conv, Dense, Flatten, Neuron, Pool
from snncc.models.layers import SpikingNeuron, TimeDistributed


class ExportError(ValueError):
    """The module uses something with no spike-graph equivalent; the message names it."""


def np_(t):
    """A tensor as a float64 numpy array (None stays None)."""
    return None if t is None else t.detach().cpu().double().numpy()


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _neuron(m):
    return Neuron(m.params)


def _linear(m):
    return Dense(np_(m.weight), np_(m.bias))


def _conv(m):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ExportError(f"Conv2d with padding mode {m.padding_mode!r} or string padding is not supported ({m})")
    return Conv(np_(m.weight), np_(m.bias), pair(m.stride), pair(m.padding), pair(m.dilation), int(m.groups))


def _maxpool(m):
    if pair(m.dilation) != (1, 1) or m.ceil_mode:
        raise ExportError(f"MaxPool2d with dilation or ceil_mode is not supported ({m})")
    return Pool("max", pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding))


def _avgpool(m):
    if m.ceil_mode or not m.count_include_pad or m.divisor_override:
        raise ExportError(f"AvgPool2d with ceil_mode/count_include_pad=False/divisor is not supported ({m})")
    return Pool("avg", pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding))


def adaptive_windows(size: int, out: int) -> list:
    """torch's adaptive pooling bins along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_avgpool(m, in_shape):
    """A fixed average pool when every bin has the same size and stride (size a multiple of out);
    otherwise the exact linear map, which only a Linear after it can absorb (:class:`AdaptiveMap`)."""
    out = tuple(o if o is not None else s for o, s in zip(pair(m.output_size), in_shape[1:]))
    if all(s % o == 0 for s, o in zip(in_shape[1:], out)):
        k = tuple(s // o for s, o in zip(in_shape[1:], out))
        return Pool("avg", k, k)
    return AdaptiveMap(in_shape, out)


class AdaptiveMap:
    """Adaptive average pooling that is no fixed pool (e.g. 1x1 -> 7x7 at a small input): its exact linear map,
    which the exporter folds into the Linear that reads it (through a flatten) with :meth:`fold`."""

    def __init__(self, in_shape, out):
        _, h, w = in_shape
        per_channel = np.zeros((out[0], out[1], h, w))
        for i, (h0, h1) in enumerate(adaptive_windows(h, out[0])):
            for j, (w0, w1) in enumerate(adaptive_windows(w, out[1])):
                per_channel[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
        self.in_shape, self.out = tuple(in_shape), tuple(out)
        self.matrix = per_channel.reshape(out[0] * out[1], h * w)  # one channel's (oh*ow, h*w) map

    def fold(self, weight: np.ndarray) -> np.ndarray:
        """A Linear's weight (out, C*oh*ow) on the pooled vector as a weight (out, C*h*w) on the unpooled one."""
        c = self.in_shape[0]
        return (weight.reshape(weight.shape[0], c, -1) @ self.matrix).reshape(weight.shape[0], -1)


def _flatten(m):
    if m.end_dim != -1:
        raise ExportError(f"Flatten with end_dim={m.end_dim} is not supported")
    return Flatten()


MODULE_RULES = [
    (nn.Linear, _linear), (nn.Conv2d, _conv), (nn.MaxPool2d, _maxpool), (nn.AvgPool2d, _avgpool),
    (nn.Flatten, _flatten), (SpikingNeuron, _neuron),
]
SHAPED_RULES = [(nn.AdaptiveAvgPool2d, _adaptive_avgpool)]
IDENTITY = [nn.Identity, nn.Dropout]
BN = (nn.BatchNorm1d, nn.BatchNorm2d)
CONTAINERS = [TimeDistributed]
MODULE_CALLS = []  # functions f(x, modules) that apply their module argument(s) to x (kept whole by the tracer)
CALL_NAMESPACES = []  # modules through which forward() reaches them (e.g. `functional.seq_to_ann_forward(...)`)


def register(cls, rule=None, container: bool = False, identity: bool = False, shaped: bool = False,
             module_call=None) -> None:
    """Map modules of ``cls`` to ``rule(module) -> op`` (``rule(module, in_shape) -> op`` if ``shaped``),
    or treat them as a container of mapped children, or as the identity at inference. With
    ``module_call=namespace``, ``cls`` is a function ``f(x, modules)`` applying modules to x (mapped like a
    container) that forward() calls through the Python module ``namespace``; the tracer keeps every public
    function of that namespace whole, so any other one called in forward() is refused by name."""
    if module_call is not None:
        MODULE_CALLS.append(cls)
        if module_call not in CALL_NAMESPACES:
            CALL_NAMESPACES.append(module_call)
    elif container:
        CONTAINERS.append(cls)
    elif identity:
        IDENTITY.append(cls)
    else:
        (SHAPED_RULES if shaped else MODULE_RULES).append((cls, rule))


def leaf_classes() -> tuple:
    """Every module class the tracer keeps whole (never traced into)."""
    return (*(c for c, _ in MODULE_RULES + SHAPED_RULES), *IDENTITY, *BN, *CONTAINERS)

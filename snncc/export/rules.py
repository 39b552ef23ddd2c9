"""The export rule table: which torch module becomes which spike-graph op.

``MODULE_RULES`` maps a module class to a function ``module -> op``; leaves that vanish at
inference (``IDENTITY``), batch norms (folded into the synapse before them, ``BN``) and containers
whose children are mapped in order (``CONTAINERS``) are listed beside it. Support for another
library's modules is added by :func:`register` (see :mod:`snncc.export.spikingjelly`).
"""
from __future__ import annotations

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


def _flatten(m):
    if m.end_dim != -1:
        raise ExportError(f"Flatten with end_dim={m.end_dim} is not supported")
    return Flatten()


MODULE_RULES = [
    (nn.Linear, _linear), (nn.Conv2d, _conv), (nn.MaxPool2d, _maxpool), (nn.AvgPool2d, _avgpool),
    (nn.Flatten, _flatten), (SpikingNeuron, _neuron),
]
IDENTITY = [nn.Identity, nn.Dropout]
BN = (nn.BatchNorm1d, nn.BatchNorm2d)
CONTAINERS = [TimeDistributed]


def register(cls, rule=None, container: bool = False) -> None:
    """Map modules of ``cls`` to ``rule(module) -> op``, or treat them as a container of mapped children."""
    if container:
        CONTAINERS.append(cls)
    else:
        MODULE_RULES.append((cls, rule))

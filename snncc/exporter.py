"""Export torch / spikingjelly spiking networks to a SpikeGraph.

The module is traced with ``torch.fx``; synapses, batch norms, pools, flattens
and neuron populations are leaves mapped by ``_MODULE_RULES`` (keyed by class),
additions and flattens called as functions are mapped too. Batch norm is folded
into the synapse before it. Anything else is refused by name: nothing is skipped
silently except modules that are the identity at inference (Identity, Dropout).
Only the module passed in is traced, so training-only parts kept elsewhere on a
model (BSD's Type 2 path, MSKD's adapters and heads) never reach the graph.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx, nn

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.neuron import HARD, IF, LIF, SOFT, NeuronParams
from snncc.passes.normalize import normalize
from snncc.training.layers import InputNormalize, SpikingNeuron, TimeDistributed

try:  # spikingjelly is a dependency, but keep the exporter importable without it
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
    _SJ_NODE = sj_neuron.BaseNode
    _SJ_CONTAINERS = (sj_layer.SeqToANNContainer,)
except ImportError:  # pragma: no cover
    sj_neuron = None
    _SJ_NODE = ()
    _SJ_CONTAINERS = ()


class ExportError(ValueError):
    """The module uses something with no spike-graph equivalent; the message names it."""


def _np(t):
    return None if t is None else t.detach().cpu().double().numpy()


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _sj_params(m) -> NeuronParams:
    reset = SOFT if m.v_reset is None else HARD
    v_reset = 0.0 if m.v_reset is None else float(m.v_reset)
    if isinstance(m, sj_neuron.LIFNode):
        if not m.decay_input:
            raise ExportError(f"{type(m).__name__} with decay_input=False is not snncc's LIF (eq. 2)")
        return NeuronParams(LIF, float(m.tau), float(m.v_threshold), v_reset, reset)
    if type(m) is sj_neuron.IFNode:
        return NeuronParams(IF, 2.0, float(m.v_threshold), v_reset, reset)
    raise ExportError(f"unsupported spikingjelly neuron {type(m).__name__} (LIFNode and IFNode are)")


def _neuron(m):
    return Neuron(m.params if isinstance(m, SpikingNeuron) else _sj_params(m))


def _linear(m):
    return Dense(_np(m.weight), _np(m.bias))


def _conv(m):
    if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ExportError(f"Conv2d with groups/dilation/padding mode/string padding is not supported ({m})")
    return Conv(_np(m.weight), _np(m.bias), _pair(m.stride), _pair(m.padding))


def _maxpool(m):
    if _pair(m.dilation) != (1, 1) or m.ceil_mode:
        raise ExportError(f"MaxPool2d with dilation or ceil_mode is not supported ({m})")
    return Pool("max", _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))


def _avgpool(m):
    if m.ceil_mode or not m.count_include_pad or m.divisor_override:
        raise ExportError(f"AvgPool2d with ceil_mode/count_include_pad=False/divisor is not supported ({m})")
    return Pool("avg", _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))


def _flatten(m):
    if m.end_dim != -1:
        raise ExportError(f"Flatten with end_dim={m.end_dim} is not supported")
    return Flatten()


_MODULE_RULES = [
    (nn.Linear, _linear), (nn.Conv2d, _conv), (nn.MaxPool2d, _maxpool), (nn.AvgPool2d, _avgpool),
    (nn.Flatten, _flatten), (SpikingNeuron, _neuron),
]
if _SJ_NODE:
    _MODULE_RULES.append((_SJ_NODE, _neuron))
_IDENTITY = (nn.Identity, nn.Dropout)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONTAINERS = (TimeDistributed, *_SJ_CONTAINERS)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        leaves = tuple(cls for cls, _ in _MODULE_RULES) + _IDENTITY + _BN + _CONTAINERS + (InputNormalize,)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _fold_bn(op, bn: nn.BatchNorm1d | nn.BatchNorm2d, name: str):
    """Fold an eval-mode batch norm into the synapse before it."""
    if not isinstance(op, (Dense, Conv)):
        raise ExportError(f"batch norm {name!r} does not follow a Linear/Conv2d and cannot be folded")
    scale = _np(bn.weight) if bn.affine else np.ones(bn.num_features)
    shift = _np(bn.bias) if bn.affine else np.zeros(bn.num_features)
    scale = scale / np.sqrt(_np(bn.running_var) + bn.eps)
    bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0])
    w = op.weight * scale.reshape(-1, *([1] * (op.weight.ndim - 1)))
    return type(op)(**{**op.__dict__, "weight": w, "bias": (bias - _np(bn.running_mean)) * scale + shift})


class _Builder:
    def __init__(self, graph: SpikeGraph):
        self.graph = graph
        self.pending = {}  # synapse name -> op, kept open so a following batch norm can fold in

    def flush(self, name):
        if name in self.pending:
            op, srcs = self.pending.pop(name)
            self.graph.add(name, op, srcs)

    def module(self, name, m, src):
        """Map a container's children in order; a single child keeps the container's name."""
        inner = m.module if isinstance(m, TimeDistributed) else m
        children = list(inner.children()) if isinstance(inner, (nn.Sequential, *_CONTAINERS)) else [inner]
        for i, sub in enumerate(children):
            src = self.leaf(name if len(children) == 1 else f"{name}.{i}", sub, src)
        return src

    def leaf(self, name, m, src):
        if isinstance(m, _CONTAINERS):
            return self.module(name, m, src)
        if isinstance(m, _IDENTITY):
            return src
        if isinstance(m, InputNormalize):
            op = self.graph.op(src)
            if not isinstance(op, Input) or op.mean is not None or self.graph.consumers(src):
                raise ExportError(f"input normalisation {name!r} must come first, directly on the network input")
            if m.feature_dims != len(op.shape) or m.mean.numel() != (op.shape[0] if op.shape else 1):
                raise ExportError(f"input normalisation {name!r} has {m.mean.numel()} channels for an input "
                                  f"of shape {list(op.shape)}")
            self.graph.replace_op(src, Input(op.shape, op.encoding, mean=_np(m.mean), std=_np(m.std)))
            return src
        if isinstance(m, _BN):
            if src not in self.pending:
                raise ExportError(f"batch norm {name!r} does not follow a Linear/Conv2d and cannot be folded")
            op, srcs = self.pending[src]
            self.pending[src] = (_fold_bn(op, m, name), srcs)
            return src
        for cls, rule in _MODULE_RULES:
            if isinstance(m, cls):
                op = rule(m)
                if name.replace(".", "").isdigit():  # nn.Sequential index: prefix the op for readability
                    name = f"{type(op).__name__.lower()}{name}"
                self.flush(src)
                if isinstance(op, (Dense, Conv)):
                    self.pending[name] = (op, [src])
                else:
                    self.graph.add(name, op, [src])
                return name
        raise ExportError(f"module {name!r} of type {type(m).__name__} has no spike-graph equivalent")


def _flatten_call(node, multi_step):
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    if start != (2 if multi_step else 1):
        raise ExportError(f"{node.name}: flatten must keep the batch{' and time' if multi_step else ''} axes")


def export(module: nn.Module, example_input: torch.Tensor, timesteps: int | None = None,
           name: str = "snn", metadata: dict | None = None) -> SpikeGraph:
    """Export a spiking network to a SpikeGraph.

    ``example_input``: a batch shaped (B, *shape) for single-step modules, or
    (T, B, *shape) for multi-step ones (snncc's SpikingNeuron, spikingjelly step_mode='m').
    The input is direct-encoded (the analog sample is presented at every step).
    """
    module = module.eval()
    multi = any(isinstance(m, SpikingNeuron) or getattr(m, "step_mode", "s") == "m" for m in module.modules())
    shape = tuple(example_input.shape[2:] if multi else example_input.shape[1:])
    try:
        traced = _Tracer().trace(module)
    except Exception as e:  # fx raises many types for untraceable control flow
        raise ExportError(f"cannot trace {type(module).__name__}: {e}") from None
    meta = dict(metadata or {})
    if timesteps is not None:
        meta["timesteps"] = int(timesteps)
    graph = SpikeGraph(name, meta)
    b = _Builder(graph)
    env, out = {}, None
    mods = dict(module.named_modules())
    for node in traced.nodes:
        if node.op == "placeholder":
            if env:
                raise ExportError("only single-input networks can be exported")
            env[node] = graph.add("input", Input(shape))
        elif node.op == "call_module":
            env[node] = b.leaf(node.target, mods[node.target], env[node.args[0]])
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            srcs = [env[a] for a in node.args]
            for s in srcs:
                b.flush(s)
            env[node] = graph.add(node.name, Add(), srcs)
        elif (node.op, node.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
            _flatten_call(node, multi)
            b.flush(env[node.args[0]])
            env[node] = graph.add(node.name, Flatten(), [env[node.args[0]]])
        elif node.op == "output":
            out = env[node.args[0]]
            b.flush(out)
        else:
            raise ExportError(f"{node.name}: {node.op} {getattr(node.target, '__name__', node.target)} "
                              f"has no spike-graph equivalent")
    for pending in list(b.pending):
        b.flush(pending)
    mode = "count" if isinstance(graph.op(out), Neuron) else "mean"
    graph.add("readout", Readout(mode), [out])
    return normalize(graph)

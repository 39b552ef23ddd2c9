"""Export torch / spikingjelly spiking networks to a SpikeGraph by tracing.

The module is traced with ``torch.fx``; synapses, batch norms, pools, flattens
and neuron populations are leaves mapped by the rule table (:mod:`snncc.export.rules`,
keyed by class); additions and flattens called as functions are mapped too. Batch norm is folded
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

from snncc.export import spikingjelly  # noqa: F401  (registers spikingjelly's modules in the rule table)
from snncc.export.rules import BN, CONTAINERS, IDENTITY, MODULE_RULES, ExportError, np_
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Readout
from snncc.models.layers import InputNormalize, SpikingNeuron, TimeDistributed
from snncc.passes.normalize import normalize


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        leaves = tuple(cls for cls, _ in MODULE_RULES) + tuple(IDENTITY) + BN + tuple(CONTAINERS) + (InputNormalize,)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _fold_bn(op, bn: nn.BatchNorm1d | nn.BatchNorm2d, name: str):
    """Fold an eval-mode batch norm into the synapse before it."""
    if not isinstance(op, (Dense, Conv)):
        raise ExportError(f"batch norm {name!r} does not follow a Linear/Conv2d and cannot be folded")
    scale = np_(bn.weight) if bn.affine else np.ones(bn.num_features)
    shift = np_(bn.bias) if bn.affine else np.zeros(bn.num_features)
    scale = scale / np.sqrt(np_(bn.running_var) + bn.eps)
    bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0])
    w = op.weight * scale.reshape(-1, *([1] * (op.weight.ndim - 1)))
    return type(op)(**{**op.__dict__, "weight": w, "bias": (bias - np_(bn.running_mean)) * scale + shift})


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
        children = list(inner.children()) if isinstance(inner, (nn.Sequential, *CONTAINERS)) else [inner]
        for i, sub in enumerate(children):
            src = self.leaf(name if len(children) == 1 else f"{name}.{i}", sub, src)
        return src

    def leaf(self, name, m, src):
        if isinstance(m, tuple(CONTAINERS)):
            return self.module(name, m, src)
        if isinstance(m, tuple(IDENTITY)):
            return src
        if isinstance(m, InputNormalize):
            op = self.graph.op(src)
            if not isinstance(op, Input) or op.mean is not None or self.graph.consumers(src):
                raise ExportError(f"input normalisation {name!r} must come first, directly on the network input")
            if m.feature_dims != len(op.shape) or m.mean.numel() != (op.shape[0] if op.shape else 1):
                raise ExportError(f"input normalisation {name!r} has {m.mean.numel()} channels for an input "
                                  f"of shape {list(op.shape)}")
            self.graph.replace_op(src, Input(op.shape, op.encoding, mean=np_(m.mean), std=np_(m.std)))
            return src
        if isinstance(m, BN):
            if src not in self.pending:
                raise ExportError(f"batch norm {name!r} does not follow a Linear/Conv2d and cannot be folded")
            op, srcs = self.pending[src]
            self.pending[src] = (_fold_bn(op, m, name), srcs)
            return src
        for cls, rule in MODULE_RULES:
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

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

import math
import operator

import numpy as np
import torch
from torch import fx, nn

from snncc.export import spikingjelly  # noqa: F401  (registers spikingjelly's modules in the rule table)
from snncc.export.rules import (BN, CALL_NAMESPACES, CONTAINERS, IDENTITY, MODULE_CALLS, MODULE_RULES, SHAPED_RULES,
                                AdaptiveMap, ExportError, leaf_classes, np_)
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Readout
from snncc.models.layers import InputNormalize, SpikingNeuron, TimeDistributed
from snncc.passes.normalize import normalize


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__(autowrap_modules=(math, *CALL_NAMESPACES), autowrap_functions=tuple(MODULE_CALLS))

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (*leaf_classes(), InputNormalize)) or super().is_leaf_module(m, qualname)


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


def _rule(name, table, m, *args):
    """The op of the first rule in ``table`` whose class ``m`` is; a rule's refusal is prefixed with the module."""
    rule = next(rule for cls, rule in table if isinstance(m, cls))
    try:
        return rule(m, *args)
    except ExportError as e:
        raise ExportError(f"module {name!r}: {e}") from None


class _Builder:
    def __init__(self, graph: SpikeGraph):
        self.graph = graph
        self.pending = {}  # synapse name -> op, kept open so a following batch norm can fold in
        self.maps = {}  # name -> (pooled node, AdaptiveMap, flattened?): a map only a Linear after a flatten absorbs
        self.types = {}

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
        if src in self.maps and not (isinstance(m, nn.Flatten) or isinstance(m, nn.Linear) and self.maps[src][2]):
            raise self.unfoldable(src, f"module {name!r} ({type(m).__name__})")
        if isinstance(m, nn.Flatten) and src in self.maps:
            _rule(name, MODULE_RULES, m)  # its own checks
            self.maps[name] = (*self.maps[src][:2], True)
            return name
        if isinstance(m, BN):
            if src not in self.pending:
                raise ExportError(f"batch norm {name!r} does not follow a Linear/Conv2d and cannot be folded")
            op, srcs = self.pending[src]
            self.pending[src] = (_fold_bn(op, m, name), srcs)
            return src
        if any(isinstance(m, cls) for cls, _ in SHAPED_RULES):
            self.flush(src)
            op = _rule(name, SHAPED_RULES, m, self.type_of(src).shape)
            if isinstance(op, AdaptiveMap):
                self.maps[name] = (src, op, False)  # (pooled node, map, flattened yet?)
                return name
            return self.add_op(name, op, src)
        if any(isinstance(m, cls) for cls, _ in MODULE_RULES):
            op = _rule(name, MODULE_RULES, m)
            if src in self.maps:  # Linear after a non-uniform adaptive pool and a flatten: W @ pooling matrix
                pooled, amap, _ = self.maps[src]
                self.flush(pooled)
                src = f"{pooled}.flatten"
                if src not in self.graph:
                    self.graph.add(src, Flatten(), [pooled])
                op = Dense(amap.fold(op.weight), op.bias)
            return self.add_op(name, op, src)
        raise ExportError(f"module {name!r} of type {type(m).__name__} has no spike-graph equivalent")

    def type_of(self, name):
        """The type of a node of the graph built so far (which has no readout yet, so graph.infer cannot run)."""
        for n in self.graph.order():
            if n not in self.types:
                self.types[n] = self.graph.op(n).infer(n, [self.types[p.src] for p in self.graph.inputs(n)])
        return self.types[name]

    def unfoldable(self, src, reader):
        amap = self.maps[src][1]
        return ExportError(f"adaptive average pooling {src!r} from {list(amap.in_shape[1:])} to {list(amap.out)} is no "
                           f"fixed pool (the input size is not a multiple of the output size); its exact linear map "
                           f"folds only into a Linear reading it (through a flatten), not into {reader}")

    def add_op(self, name, op, src):
        if name.replace(".", "").isdigit():  # nn.Sequential index: prefix the op for readability
            name = f"{type(op).__name__.lower()}{name}"
        self.flush(src)
        if isinstance(op, (Dense, Conv)):
            self.pending[name] = (op, [src])
        else:
            self.graph.add(name, op, [src])
        return name


_REASONS = {operator.mul: "multiplies two tensors (spikingjelly's SEW 'AND' / 'IAND' connect function: a logic "
                          "gate between spike trains, which no spike-graph op computes and no LIF/IF population "
                          "reproduces exactly, since a membrane keeps a lone input spike into the next step)",
            operator.sub: "subtracts tensors (spikingjelly's SEW 'IAND' computes (1 - x) * y)"}


def _refused(node, root: nn.Module) -> ExportError:
    """The refusal of an fx node with no rule, naming the module whose forward calls it and the reason."""
    stack = node.meta.get("nn_module_stack") or {}
    qualname, cls = list(stack.values())[-1] if stack else ("", type(root))
    where = f"module {qualname!r} ({getattr(cls, '__name__', cls)}): " if qualname else f"{cls.__name__}.forward: "
    what = getattr(node.target, "__name__", node.target)
    reason = _REASONS.get(node.target, "has no spike-graph equivalent")
    return ExportError(f"{where}{node.name}: {node.op} {what} {reason}")


def _flatten_call(node, multi_step):
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    if start != (2 if multi_step else 1):
        raise ExportError(f"{node.name}: flatten must keep the batch{' and time' if multi_step else ''} axes")


def export(module: nn.Module, example_input: torch.Tensor, timesteps: int | None = None,
           name: str = "snn", metadata: dict | None = None, population: int = 1) -> SpikeGraph:
    """Export a spiking network to a SpikeGraph.

    ``example_input``: a batch shaped (B, *shape) for single-step modules, or
    (T, B, *shape) for multi-step ones (snncc's SpikingNeuron, spikingjelly step_mode='m').
    The input is direct-encoded (the analog sample is presented at every step).
    ``population``: output neurons per class, in consecutive blocks (the readout's, :class:`Readout`).
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

    def src(node, reader):
        if node not in env:
            raise ExportError(f"{reader} reads {node.name} ({node.op} {node.target}), which is no network value")
        if env[node] in b.maps:
            raise b.unfoldable(env[node], reader)
        return env[node]

    for node in traced.nodes:
        if node.op == "placeholder":
            if env:
                raise ExportError("only single-input networks can be exported")
            env[node] = graph.add("input", Input(shape))
        elif node.op == "call_module":
            env[node] = b.leaf(node.target, mods[node.target], env[node.args[0]])
        elif node.op == "get_attr":  # a submodule handed to a module call (fx records it as an attribute)
            continue
        elif node.op == "call_function" and node.target in MODULE_CALLS:  # e.g. seq_to_ann_forward(x, modules)
            inner = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
            env[node] = src(node.args[0], node.name)
            for attr in inner:
                m = mods.get(attr.target) if isinstance(attr, fx.Node) and attr.op == "get_attr" else None
                if m is None:
                    raise ExportError(f"{node.name}: {node.target.__name__} applies {attr}, not a submodule")
                env[node] = b.module(attr.target, m, env[node])
        elif node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
            srcs = [src(a, f"Add {node.name!r}") for a in node.args]
            for s in srcs:
                b.flush(s)
            env[node] = graph.add(node.name, Add(), srcs)
        elif (node.op, node.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
            _flatten_call(node, multi)
            if env[node.args[0]] in b.maps:
                b.maps[node.name] = (*b.maps[env[node.args[0]]][:2], True)
                env[node] = node.name
                continue
            b.flush(env[node.args[0]])
            env[node] = graph.add(node.name, Flatten(), [env[node.args[0]]])
        elif node.op == "output":
            out = src(node.args[0], "the network's output")
            b.flush(out)
        else:
            raise _refused(node, module)
    for pending in list(b.pending):
        b.flush(pending)
    mode = "count" if isinstance(graph.op(out), Neuron) else "mean"
    graph.add("readout", Readout(mode, population), [out])
    return normalize(graph)

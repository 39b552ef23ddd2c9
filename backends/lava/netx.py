"""Export a fully spiking feedforward SpikeGraph as a lava-dl netx HDF5 network (``model.net``).

lava-dl is not installed or imported (it pins an old torch); the file is written with h5py
following the format that ``lava.lib.dl.netx.hdf5.Network`` reads (facts taken from lava-dl's
netx ``hdf5.py``/``utils.py``/``blocks``; the code here is snncc's own):

    /layer/0, /layer/1, ...   one group per layer, in order (netx indexes them 0..n-1)
      type      bytes: 'input' | 'flatten' | 'dense' | 'conv'   (netx has no working 'pool')
      shape     int array, (C, H, W) or (N,) -- netx reverses it to its (X, Y, Z) = WHC order
      weight    int array: dense (out, in); conv (C_out, C_in, kh, kw), a cross-correlation kernel
                (netx flips and transposes it for Lava's Conv itself)
      bias      int array, optional: bias_mant of the layer's neurons (netx builds them with
                bias_exp = 6); dense (N,), conv per channel (C,)
      stride, padding, dilation (2,) in (H, W) order, groups  -- conv only
      neuron/   type b'CUBA', iDecay (Lava du = iDecay - 1), vDecay (= Lava dv), vThMant (= Lava
                vth: fires on v > vThMant << 6), refDelay 1, gradedSpike False

netx builds each dense/conv layer as a Lava Dense/Conv synapse plus a LIF (LIFReset with
``reset_interval``): one step of delay per layer, like snncc's own Lava lowering. Its dense
weights go through netx's ``optimize_weight_bits``, which keeps plain integer weights exact
(it only re-expresses them as mantissa and exponent), so the file holds integer weights in
a_in units with weight_exp 0.

The numbers are snncc's fixed-point lowering under netx's conventions
(``quantizer.lower_fixed(graph, netx=True)``: weight_exp 0, bias_exp 6): the file's integers
*are* that plan's, so its integer reference (:func:`.integer.run_integer`) and Lava's
fixed_pt run of that plan give the spikes the netx network gives when loaded as::

    hdf5.Network(net_config="model.net", reset_interval=T + D, reset_offset=R)

(the file's root attributes ``snncc_reset_interval_extra`` = D, the number of synapse hops, and
``snncc_reset_offset`` = R). Samples follow one another every T + D steps. netx resets layer i
at step R + 1 + i of every interval (Lava counts steps from 1), i.e. exactly when the sample's
first input reaches it; that is what makes a bias of a deeper layer start with its input, as in
snncc's reference (snncc's Lava lowering feeds such biases through a clock chain instead; in
netx mode that clock Dense has weight_exp 0, so it adds the same integer as bias_mant << 6).

Inputs. A spike-encoded input becomes an ``input`` layer with ``shape`` only (no neuron): the
spikes go straight into the first synapse (R = 1: the first population is one hop deep). A
direct-encoded (analog) input reaches the first population as the current W x + b of its first
synapse; netx cannot express that synapse (its ``input`` layer is a neuron population driven
per sample through its bias), so, exactly as in snncc's Lava lowering, the first population is
the netx ``input`` layer, its per-sample bias_mant is ``rint(scale 2^k (W x + b))`` computed on
the host, and W, b, scale and k are stored in that group as ``hostWeight``, ``hostBias`` and
attributes (netx ignores keys it does not know). R = 0 then. A first population fed by the input
itself ([Flatten] -> LIF, BSD's encoder layer) is the ``identity`` kind: bias_mant =
``rint(scale 2^k x)``, no matrix stored. A normalised input (``Input.mean``/``std``) adds
``hostMean``/``hostStd``: the host normalises x before either rule.

Refused, with one line naming the node: residual Add, recurrent (delayed) edges, populations
with several inputs or an identity input other than the direct input, branching, max pooling (an OR population),
an avg/sum pool folded into a conv that a later conv reads, a host first layer other than
[Flatten] + one Dense/Conv or the input itself, graded spikes; soft reset is refused by the lowering itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from snncc.backends.lava.plan import ConnKind, ConnRole, LoweringError, PopRole
from snncc.backends.lava.quant import NETX_BIAS_EXP, lava_weights
from snncc.backends.lava.quantizer import lower_fixed
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Pool, PoolMode, is_synapse
from snncc.ir.types import GraphError

__all__ = ["NETX_FILE", "NetxExport", "netx_export", "write_netx"]

NETX_FILE = "model.net"


@dataclass
class NetxExport:
    """What goes into the file: the netx-mode fixed plan and one dict per netx layer."""
    plan: object
    layers: list = field(default_factory=list)      # [{"type", ...}] in file order
    reset_offset: int = 0
    hops: int = 0                                     # D: reset_interval = T + D

    def summary(self, path: str = NETX_FILE) -> str:
        lines = [f"netx HDF5 {path}: {len(self.layers)} layers; load with hdf5.Network(net_config=..., "
                 f"reset_interval=T + {self.hops}, reset_offset={self.reset_offset})"]
        for i, lay in enumerate(self.layers):
            desc = f"  layer/{i:<3} {lay['type']:<8} shape={list(lay['shape'])}" if "shape" in lay else \
                f"  layer/{i:<3} {lay['type']:<8}"
            if "neuron" in lay:
                nrn = lay["neuron"]
                desc += (f" CUBA iDecay={nrn['iDecay']} vDecay={nrn['vDecay']} vThMant={nrn['vThMant']}")
            if "weight" in lay:
                w = lay["weight"]
                desc += f" weight {list(w.shape)} in [{int(w.min())}, {int(w.max())}]"
            if "bias" in lay:
                desc += f" bias in [{int(lay['bias'].min())}, {int(lay['bias'].max())}]"
            if "host" in lay:
                shape = f" {list(lay['hostWeight'].shape)}" if "hostWeight" in lay else ""
                norm = ", normalised input" if "hostMean" in lay else ""
                desc += f" (per-sample bias from host {lay['host']['kind']}{shape}{norm})"
            desc += f"  <- {lay['node']}" if lay.get("node") else ""
            lines.append(desc)
        return "\n".join(lines)


def _fail(node, op, msg):
    raise LoweringError(f"netx: node {node!r} ({op}): {msg}")


def _synapses_reached(graph: SpikeGraph, n: str) -> list:
    """Synapses fed by ``n`` directly or through Flatten / Pool (folds)."""
    out, todo = [], [c for c in graph.consumers(n)]
    while todo:
        c = todo.pop()
        if graph.op(c).folds_into_synapse:
            todo.extend(graph.consumers(c))
        elif not graph.op(c).is_readout:
            out.append(c)
    return out


def _check_graph(graph: SpikeGraph) -> None:
    """Structural checks with a one-line error naming the node (before any quantisation)."""
    try:
        graph.infer()
    except GraphError as e:
        raise LoweringError(f"netx: invalid graph: {e}") from None
    for n in graph.order():
        op = graph.op(n)
        name = type(op).__name__
        for p in graph.inputs(n):
            if p.delay:
                raise LoweringError(f"netx: edge {p.src!r} -> {n!r} is recurrent (delay {p.delay}); "
                                    "netx networks are feedforward layer chains")
        if isinstance(op, Add):
            _fail(n, name, "a residual/shortcut sum has no netx layer (netx networks are feedforward chains)")
        if isinstance(op, Pool) and op.mode is PoolMode.MAX:
            _fail(n, f"max {name}", "max pooling (an OR population in snncc's Lava lowering) has no netx "
                                    "layer: netx does not implement 'pool'")
    for n in graph.order():
        op = graph.op(n)
        name = type(op).__name__
        if op.is_population:
            ins = graph.inputs(n)
            if len(ins) != 1:
                _fail(n, name, f"integrates {len(ins)} inputs; a netx layer has exactly one synapse")
            direct = _reads_input(graph, ins[0].src) and _input_of(graph, ins[0].src).direct
            if not is_synapse(graph.op(ins[0].src)) and not direct:
                _fail(n, name, f"is fed by {ins[0].src!r} directly (an identity spike path), not through a "
                               "dense/conv synapse")
            reached = _synapses_reached(graph, n)
            if len(reached) > 1:
                _fail(n, name, f"feeds {len(reached)} nodes ({', '.join(map(repr, reached))}), a branch or "
                               "shortcut; netx networks are chains")
    (out,) = graph.output_nodes
    src = graph.inputs(out)[0].src
    while graph.op(src).passes_through:
        src = graph.inputs(src)[0].src
    pops = graph.populations()
    if not pops or src != pops[-1]:
        _fail(out, "Readout", f"reads {src!r}, not the last population of the chain")


def _reads_input(graph: SpikeGraph, node) -> bool:
    """``node`` is the network input, possibly behind Flatten ops (an identity path from it)."""
    while isinstance(graph.op(node), Flatten):
        (p,) = graph.inputs(node)
        node = p.src
    return graph.op(node).is_input


def _input_of(graph: SpikeGraph, node):
    while not graph.op(node).is_input:
        (p,) = graph.inputs(node)
        node = p.src
    return graph.op(node)


def _normalisation(inp: Input) -> dict:
    """The input's normalisation, which the host applies first: x <- (x - hostMean[c]) / hostStd[c]."""
    if inp.mean is None:
        return {}
    return {"hostMean": np.asarray(inp.mean, np.float64), "hostStd": np.asarray(inp.std, np.float64)}


def _host_layer(graph: SpikeGraph, plan, pop) -> dict:
    """The direct-input first synapse (computed per sample on the host): kind, W, b, stride/padding.

    A population driven by the input itself (e.g. BSD's encoder layer, Flatten -> LIF) is the
    ``identity`` kind: its per-sample bias is the (normalised) sample, scaled; no matrix is stored."""
    (d,) = [d for d in plan.dyns if d.target == pop]
    if len(d.terms) != 1 or np.any(d.const):
        _fail(pop, "Neuron", "its per-sample input is not a single host-side synapse")
    node, scale = d.terms[0]
    if _reads_input(graph, node):
        host = {"kind": "identity", "scale": float(scale), "scale_exp": int(plan.fixed.pops[pop].k), "node": node}
        return {"host": host} | _normalisation(_input_of(graph, node))
    op = graph.op(node)
    if not isinstance(op, (Dense, Conv)):
        _fail(node, type(op).__name__, "netx host-side first layer supports [Flatten] + one Dense or Conv")
    (p,) = graph.inputs(node)
    src = p.src
    while isinstance(graph.op(src), Flatten):
        (q,) = graph.inputs(src)
        src = q.src
    if not graph.op(src).is_input:
        _fail(p.src, type(graph.op(p.src)).__name__, "netx host-side first layer supports [Flatten] + one "
                                                     "Dense or Conv on the input")
    host = {"kind": "dense" if isinstance(op, Dense) else "conv", "scale": float(scale),
            "scale_exp": int(plan.fixed.pops[pop].k), "node": node}
    if isinstance(op, Conv):
        host.update(stride=[int(v) for v in op.stride], padding=[int(v) for v in op.padding],
                    dilation=[int(v) for v in op.dilation], groups=int(op.groups))
    w = np.asarray(op.weight, dtype=np.float64)
    c_out = w.shape[0]
    b = np.zeros(c_out) if op.bias is None else np.asarray(op.bias, dtype=np.float64)
    return {"host": host, "hostWeight": w, "hostBias": b} | _normalisation(graph.op(src))


def _neuron_group(fp) -> dict:
    return {"type": "CUBA", "iDecay": int(fp.du) + 1, "vDecay": int(fp.dv), "vThMant": int(fp.vth),
            "refDelay": 1, "gradedSpike": False}


def _int_weight(plan, c):
    q = plan.fixed.conns[c.name]
    if q.weight_exp != 0:  # pragma: no cover - netx mode guarantees it
        raise LoweringError(f"netx: {c.name!r} has weight_exp {q.weight_exp}")
    w = lava_weights(q.weight, q.sign_mode)
    w = w.toarray() if sparse.issparse(w) else np.asarray(w)
    return w.astype(np.int64)


def netx_export(graph: SpikeGraph, input_bound: float = 1.0) -> NetxExport:
    """Check the graph, quantise it under netx's conventions and describe the netx layers."""
    _check_graph(graph)
    plan = lower_fixed(graph, input_bound=input_bound, netx=True)
    if plan.graded_edges:  # pragma: no cover - an Add is refused above
        raise LoweringError("netx: graded messages are not exported")
    pops = sorted((p for p in plan.pops.values() if p.role is PopRole.NEURON), key=lambda p: p.depth)
    others = [p for p in plan.pops.values() if p.role not in (PopRole.NEURON, PopRole.CLOCK)]
    if others:  # pragma: no cover - relays/OR pools only come with shortcuts or max pools, refused above
        raise LoweringError(f"netx: helper population {others[0].name!r} ({others[0].role}) has no netx layer")
    types = graph.infer()
    ex = NetxExport(plan)
    first = pops[0]
    ndim = 0
    if plan.source:                       # spike input: shape only, spikes go into the first synapse
        (inp,) = graph.input_nodes
        shape = types[inp].shape
        syn = next(c for c in plan.conns if c.dst == first.name and c.role is ConnRole.SYNAPSE)
        if syn.kind is not ConnKind.CONV:
            shape = (int(np.prod(shape)),)      # first layer dense: feed flattened (C-order) spikes
        ex.layers.append({"type": "input", "shape": np.asarray(shape, np.int64), "node": inp})
        ex.reset_offset = 1
        ndim = len(shape)
        chain = pops
    else:                                 # direct input: the first population is netx's input layer
        fp = plan.fixed.pops[first.name]
        if first.depth != 0 or any(c.dst == first.name and c.role is ConnRole.SYNAPSE for c in plan.conns):
            _fail(first.node, "Neuron", "the first population must be driven by the direct input alone")
        lay = {"type": "input", "shape": np.asarray(first.shape, np.int64), "neuron": _neuron_group(fp),
               "node": first.node} | _host_layer(graph, plan, first.name)
        if np.any(fp.bias_mant):  # pragma: no cover - a direct-input population's bias is per sample
            lay["bias"] = fp.bias_mant
        ex.layers.append(lay)
        ex.reset_offset = 0
        ndim = len(first.shape)
        chain = pops[1:]
    prev = first.name if not plan.source else plan.source["name"]
    for p in chain:
        ins = [c for c in plan.conns if c.dst == p.name]
        syns = [c for c in ins if c.role is ConnRole.SYNAPSE]
        biases = [c for c in ins if c.role is ConnRole.BIAS]
        if len(syns) != 1 or len(syns) + len(biases) != len(ins) or syns[0].src != prev or syns[0].hops != 1:
            _fail(p.node, "Neuron", "is not one synapse hop after the previous layer")  # pragma: no cover
        (c,) = syns
        fp = plan.fixed.pops[p.name]
        if np.any(fp.bias_mant) and np.any(fp.bias_exp != NETX_BIAS_EXP):  # pragma: no cover
            raise LoweringError(f"netx: bias of {p.name!r} does not use bias_exp {NETX_BIAS_EXP}")
        bias = fp.bias_mant.astype(np.int64).copy()
        for b in biases:
            bias += _int_weight(plan, b)[:, 0]
        lay = {"neuron": _neuron_group(fp), "node": p.node, "synapse": c.nodes[0]}
        w = _int_weight(plan, c)
        if c.kind is ConnKind.CONV:
            if ndim != 3:
                _fail(c.nodes[0], "Conv", "reads a 1-D netx layer (an avg/sum pool folded into the conv before "
                                          "it makes that an unrolled dense layer: netx has no pooling layer); "
                                          "netx convs need (C, H, W) input")
            co = int(c.conv["out_shape"][0])
            per_ch = bias.reshape(co, -1)
            if not np.all(per_ch == per_ch[:, :1]):  # pragma: no cover - conv biases are per channel
                _fail(c.nodes[0], "Conv", "neuron-wise bias in a conv layer is not exported")
            lay.update(type="conv", shape=np.asarray(c.conv["out_shape"], np.int64), weight=w,
                       stride=np.asarray(c.conv["stride"], np.int64), padding=np.asarray(c.conv["padding"], np.int64),
                       dilation=np.asarray(c.conv["dilation"], np.int64), groups=int(c.conv["groups"]))
            if np.any(bias):
                lay["bias"] = per_ch[:, 0].copy()
            ndim = 3
        else:
            if ndim == 3:
                ex.layers.append({"type": "flatten", "node": None})
            lay.update(type="dense", shape=np.asarray([p.size], np.int64), weight=w)
            if np.any(bias):
                lay["bias"] = bias
            ndim = 1
        ex.layers.append(lay)
        prev = p.name
    ex.hops = int(max(p.depth for p in pops))
    return ex


def _write(handle, ex: NetxExport, graph: SpikeGraph) -> None:
    import h5py
    handle.attrs["format"] = "lava-dl netx hdf5 (lava.lib.dl.netx.hdf5.Network), written by snncc"
    handle.attrs["snncc_graph"] = graph.name
    handle.attrs["snncc_reset_offset"] = ex.reset_offset
    handle.attrs["snncc_reset_interval_extra"] = ex.hops
    handle.attrs["snncc_usage"] = (f"hdf5.Network(net_config=PATH, reset_interval=T + {ex.hops}, "
                                   f"reset_offset={ex.reset_offset}); one sample every T + {ex.hops} steps")
    top = handle.create_group("layer")
    for i, lay in enumerate(ex.layers):
        g = top.create_group(str(i))
        g.create_dataset("type", data=np.bytes_(lay["type"]))
        for key in ("shape", "weight", "bias", "stride", "padding", "dilation"):
            if key in lay:
                g.create_dataset(key, data=np.asarray(lay[key], dtype=np.int64))
        if "groups" in lay:
            g.create_dataset("groups", data=np.int64(lay["groups"]))
        if "neuron" in lay:
            ng = g.create_group("neuron")
            for key, val in lay["neuron"].items():
                ng.create_dataset(key, data=np.bytes_(val) if isinstance(val, str) else
                                  (np.bool_(val) if isinstance(val, bool) else np.int64(val)))
        if "host" in lay:
            for key, val in lay["host"].items():
                g.attrs[f"host_{key}"] = val
            if "hostWeight" in lay:
                g.create_dataset("hostWeight", data=lay["hostWeight"])
                g.create_dataset("hostBias", data=lay["hostBias"])
                g.attrs["host_note"] = ("not read by netx: per sample, bias_mant = rint(host_scale * "
                                        "2**host_scale_exp * (hostWeight x + hostBias)) of this input layer's "
                                        "neurons (bias_exp 6)")
            else:
                g.attrs["host_note"] = ("not read by netx: per sample, bias_mant = rint(host_scale * "
                                        "2**host_scale_exp * x) of this input layer's neurons (bias_exp 6), "
                                        "x the flattened sample")
            if "hostMean" in lay:
                g.create_dataset("hostMean", data=lay["hostMean"])
                g.create_dataset("hostStd", data=lay["hostStd"])
                g.attrs["host_note"] += "; x is first normalised per channel: x <- (x - hostMean[c]) / hostStd[c]"
        if lay.get("node"):
            g.attrs["snncc_node"] = lay["node"]
    del h5py


def write_netx(graph: SpikeGraph, path, input_bound: float = 1.0, ex: NetxExport | None = None) -> NetxExport:
    """Write ``path`` (atomically: nothing half-written) and return the export description."""
    import h5py

    from snncc.fileio import atomic_path
    ex = ex or netx_export(graph, input_bound)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _write(f, ex, graph)
    return ex

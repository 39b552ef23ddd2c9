"""Lower a typed, validated SpikeGraph to a float :class:`~.plan.LavaPlan` (pure data).

One rule per IR op class (``RULES``; the package docstring explains each). The graph has
already passed the validation stage of the pipeline (:func:`snncc.runtime.compile`), so
only what the Lava mapping itself cannot express is refused here, one line naming the node.
Then alignment: population depths, relay chains, the clock chain for late biases, and the
graded-message bit widths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from snncc.backends.base import Requirements
from snncc.backends.lava.matrices import as_matrix, conv_fields, conv_matrix_sparse, identity, pool_matrix_sparse
from snncc.backends.lava.plan import (DENSE_MAX_ENTRIES, GRADED_MAX_BITS, Conn, ConnKind, ConnRole, Dyn, DynVar, LavaPlan,
                                      LoweringError, Pop, PopRole, Precision)
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, PoolMode, Readout, is_synapse
from snncc.ir.types import Kind

__all__ = ["RULES", "GRADED_HINT", "requirements", "lower_float"]

GRADED_HINT = ("its spike counts can be sent as Loihi 2 graded spikes: snncc compile/run --graded-spikes, "
               "Options(graded_spikes=True)")


def requirements(graded: bool) -> Requirements:
    """The validation stage for Lava: fully spiking; with graded spikes, spike counts
    (Kind.COUNT) may reach synapses and populations (they become graded messages)."""
    counts = frozenset({Kind.COUNT})
    return Requirements(fully_spiking=True, accept=counts if graded else frozenset(), could_accept=counts,
                        hint=GRADED_HINT,
                        relaxed="even with graded spikes (they carry spike counts, not {kind} values)")


@dataclass
class _Edge:
    src: str
    dst: str
    weight: object                 # ndarray (Dense) | CSR (Sparse) | conv kernel (Conv)
    delay: int
    role: ConnRole
    nodes: tuple
    kind: ConnKind = ConnKind.DENSE
    conv: dict | None = None
    note: str = ""


class _Ctx:
    def __init__(self, graph: SpikeGraph, graded: bool = False):
        self.g = graph
        self.types = graph.infer()
        self.graded = graded
        self.static: set = set()
        self.sources: dict = {}      # graph node -> pop/source name (spike sources)
        self.pops: dict = {}
        self.edges: list = []
        self.biases: list = []       # (pop, start offset from depth, vector or None, static node, scale)
        self.source = None
        self.readout = None
        self.deferred: list = []     # edge building, once every spike source is registered

    def fail(self, node, msg):
        raise LoweringError(f"node {node!r} ({type(self.g.op(node)).__name__}): {msg}")

    def resolve(self, node, seen=()):
        """Follow linear folds back to a spike source: (source, matrix or None, delay)."""
        op = self.g.op(node)
        if node in self.sources:
            return self.sources[node], None, 0
        if op.folds_into_synapse and getattr(op, "mode", None) is not PoolMode.MAX:
            (p,) = self.g.inputs(node)
            if p.src in self.static:
                self.fail(node, "static (direct-input) value used where spikes are expected")
            src, m, d = self.resolve(p.src)
            if isinstance(op, Pool):
                pm = pool_matrix_sparse(self.types[p.src].shape, op.kernel, op.stride, op.padding, op.window_value)
                m = pm if m is None else pm @ m
            return src, m, d + p.delay
        self.fail(node, "cannot be lowered as a spike source or a linear fold into a synapse")


def _rule_input(ctx, n, op):
    if op.direct:
        ctx.static.add(n)
    else:
        size = ctx.types[n].size
        ctx.source = {"name": n, "node": n, "size": size}
        ctx.sources[n] = n


def _all_static(ctx, n):
    ports = ctx.g.inputs(n)
    return bool(ports) and all(p.delay == 0 and p.src in ctx.static for p in ports)


def _rule_fold(ctx, n, op):
    if _all_static(ctx, n):
        ctx.static.add(n)


def _rule_pool(ctx, n, op):
    if _all_static(ctx, n):
        ctx.static.add(n)
        return
    if op.mode is not PoolMode.MAX:
        return  # folded into the consuming synapse
    (p,) = ctx.g.inputs(n)
    sop = ctx.g.op(p.src)
    if ctx.types[p.src].kind is not Kind.SPIKE or not (sop.is_population or sop.is_input or isinstance(sop, Pool)):
        ctx.fail(n, f"max pooling of {ctx.types[p.src].kind.value} values from {p.src!r}: "
                    "only max pooling of a population's spikes (an OR) is lowered")
    m = pool_matrix_sparse(ctx.types[p.src].shape, op.kernel, op.stride, op.padding, 1.0)
    ctx.pops[n] = Pop(n, PopRole.OR, ctx.types[n].size, 1.0, 1.0, 0.5, node=n, shape=ctx.types[n].shape)
    ctx.sources[n] = n
    ctx.deferred.append(lambda: ctx.edges.append(_Edge(ctx.resolve(p.src)[0], n, m, p.delay, ConnRole.POOL, (n,),
                                                       ConnKind.SPARSE, None, "OR window (0/1 CSR)")))


def _rule_synapse(ctx, n, op):
    if _all_static(ctx, n):
        ctx.static.add(n)
    elif any(p.src in ctx.static for p in ctx.g.inputs(n)):
        ctx.fail(n, "delayed edge from the direct-encoded input is not supported")


def _synapse_matrix(ctx, n, op):
    if isinstance(op, Dense):
        return np.asarray(op.weight, dtype=np.float64)
    (p,) = ctx.g.inputs(n)
    return conv_matrix_sparse(op.weight, ctx.types[p.src].shape, op.stride, op.padding, op.dilation, op.groups)


LAVA_CONV_FIELD_MAX = 127  # lava 0.10's Conv models hold kernel size, stride, padding, dilation, groups as int8


def _synapse_edge(ctx, src, sop, s, m, scale, delay, dst):
    """Choose the Lava process of one synapse: a Conv reading a spike source's (C, H, W)
    vector directly -> lava Conv; anything with a folded avg/sum pool (Toeplitz product) or a
    Dense op -> a matrix (dense, or CSR when large)."""
    (sp,) = ctx.g.inputs(src)
    fits = isinstance(sop, Conv) and max(*sop.weight.shape[2:], *sop.stride, *sop.padding, *sop.dilation,
                                         sop.groups) <= LAVA_CONV_FIELD_MAX
    if fits and m is None:
        cv = {"in_shape": tuple(ctx.types[sp.src].shape), "out_shape": tuple(ctx.types[src].shape),
              **conv_fields(sop)}
        w = np.asarray(sop.weight, dtype=np.float64) * scale
        return _Edge(s, dst, w, delay, ConnRole.SYNAPSE, (src,), ConnKind.CONV, cv, "lava Conv")
    if isinstance(sop, Conv):
        w = _synapse_matrix(ctx, src, sop)
        w = w if m is None else w @ m
        why = "Toeplitz: " + ("avg/sum pool folded into the conv" if m is not None else
                              f"conv geometry beyond lava Conv's 8-bit fields (> {LAVA_CONV_FIELD_MAX})")
    else:
        w = np.asarray(sop.weight, dtype=np.float64)
        w = w if m is None else np.asarray((m.T @ w.T).T)
        why = "" if m is None else "pool/flatten folded"
    w, kind, why = as_matrix(w, why, DENSE_MAX_ENTRIES)
    return _Edge(s, dst, w * scale, delay, ConnRole.SYNAPSE, (src,), ConnKind(kind), None, why)


def _rule_neuron(ctx, n, op):
    prm = op.params
    if op.heterogeneous:
        ctx.fail(n, "per-neuron parameters (tau, v_th, v_reset, tau_syn arrays) are not lowered to Lava: its LIF "
                    "has one du, dv and vth per process; run it with the torch or numba backend")
    if prm.soft:
        ctx.fail(n, "soft reset (reset by subtraction) has no exact Lava LIF equivalent "
                    "(Lava's LIF resets v to 0); use hard reset")
    leaky, inv_tau, v_th, v_reset, v_rest, _, _ = prm.scalars()
    scale = prm.input_gain  # Lava's v = v (1 - dv) + u: inputs x 1/tau (BSD eq. 2), or as they are (decay_input=False)
    du = 1.0
    if op.current_based:  # CUBA is Lava's LIF with du = 1/tau_syn: u = J * input_gain, inputs x input_gain / tau_syn
        du = 1.0 / prm.tau_syn
        scale *= du
        if any(p.src in ctx.static or getattr(ctx.g.op(p.src), "bias", None) is not None for p in ctx.g.inputs(n)):
            ctx.fail(n, "a current-based LIF fed by the direct-encoded input or a synapse bias: Lava adds those "
                        "to v, past the synaptic current")
    if not v_th > v_rest:
        ctx.fail(n, "a memoryless LIF whose threshold is at or below its resting potential fires without input; "
                    "Lava's step alignment needs every population silent before its first step")
    vth = float(np.nextafter(v_th - v_reset, -np.inf))
    ctx.pops[n] = Pop(n, PopRole.NEURON, ctx.types[n].size, du, inv_tau if leaky else 0.0, vth, node=n,
                      shape=ctx.types[n].shape, scale=scale, record=True)
    ctx.sources[n] = n
    ctx.deferred.append(lambda: _neuron_edges(ctx, n, scale))


def _neuron_edges(ctx, n, scale):
    for port in ctx.g.inputs(n):
        src, sop = port.src, ctx.g.op(port.src)
        if src in ctx.static:
            if port.delay:
                ctx.fail(n, f"delayed edge from the direct-encoded input chain ({src!r}) is not supported")
            ctx.biases.append((n, 0, None, src, scale))
        elif is_synapse(sop):
            (sp,) = ctx.g.inputs(src)
            s, m, d = ctx.resolve(sp.src)
            ctx.edges.append(_synapse_edge(ctx, src, sop, s, m, scale, port.delay + sp.delay + d, n))
            if sop.bias is not None:
                b = np.asarray(sop.bias, dtype=np.float64)
                b = np.repeat(b, ctx.types[src].size // b.size)  # conv: one bias per channel
                ctx.biases.append((n, port.delay, b * scale, None, 1.0))
        else:
            s, m, d = ctx.resolve(src)
            w = identity(ctx.types[n].size) if m is None else sparse.csr_matrix(m)
            ctx.edges.append(_Edge(s, n, w * scale, port.delay + d, ConnRole.IDENTITY, (src,), ConnKind.SPARSE, None,
                                   "identity spike path (CSR)"))


def _rule_add(ctx, n, op):
    """A spike ADD (COUNT) -> a GradedVec forwarding the count as a graded spike."""
    if not ctx.graded:
        raise LoweringError(f"no Lava lowering rule for op Add (node {n!r}) with binary spikes; {GRADED_HINT}")
    kind = ctx.types[n].kind
    if kind is not Kind.COUNT:
        ctx.fail(n, f"adds {kind.value} values (a membrane shortcut): graded spikes carry spike counts only")
    ctx.pops[n] = Pop(n, PopRole.GRADED, ctx.types[n].size, 0.0, 0.0, 0.0, node=n, shape=ctx.types[n].shape)
    ctx.sources[n] = n
    ctx.deferred.append(lambda: _add_edges(ctx, n))


def _add_edges(ctx, n):
    for port in ctx.g.inputs(n):
        src, m, d = ctx.resolve(port.src)
        w = identity(ctx.types[n].size) if m is None else sparse.csr_matrix(m)
        if not np.all(np.isin(w.data, (0.0, 1.0))):  # pragma: no cover - only sum pools fold in here
            ctx.fail(n, f"input {port.src!r} is not a 0/1 path of spikes or counts")
        ctx.edges.append(_Edge(src, n, w, port.delay + d, ConnRole.ADD, (port.src,), ConnKind.SPARSE, None,
                               "spike ADD input (CSR, weight 1)"))


def _graded_bounds(pops: dict, conns: list) -> None:
    """Largest value each GradedVec can send (``Pop.max_value``): the sum over its inputs of
    (0/1 weights) x (the source's largest value: 1 for spikes); a relay repeats its source.
    A count that depends on itself (a recurrent edge between graded populations) is refused."""
    into: dict = {}
    for c in conns:
        into.setdefault(c.dst, []).append(c)
    visiting: set = set()

    def bound(name):
        p = pops.get(name)
        if p is None or not p.graded:
            return 1
        if name in visiting:
            raise LoweringError(f"node {p.node or name!r} (Add): its spike count depends on itself through a "
                                "delayed edge; unbounded graded values are not lowered")
        if p.max_value > 1 or not into.get(name):
            return p.max_value
        visiting.add(name)
        b = np.zeros(p.size)
        for c in into[name]:
            w = c.weight if sparse.issparse(c.weight) else sparse.csr_matrix(c.weight)
            b = b + np.asarray(abs(w).sum(axis=1)).ravel() * bound(c.src)
        visiting.discard(name)
        p.max_value = max(1, int(round(float(b.max(initial=0.0)))))
        return p.max_value
    for name in pops:
        bound(name)


def _rule_readout(ctx, n, op):
    ctx.deferred.append(lambda: _readout(ctx, n, op))


def _readout(ctx, n, op):
    (p,) = ctx.g.inputs(n)
    if p.src in ctx.static:
        ctx.fail(n, "reads the direct input: nothing to simulate")
    src, m, d = ctx.resolve(p.src)
    if m is not None or d or p.delay:
        ctx.fail(n, f"readout of {p.src!r} must read a population's spikes directly (or flattened)")
    if src == (ctx.source or {}).get("name"):
        ctx.fail(n, "readout of the input itself")
    ctx.readout = {"node": n, "pop": src, "mode": op.mode}


RULES = {
    Input: _rule_input,
    Dense: _rule_synapse,
    Conv: _rule_synapse,
    Pool: _rule_pool,
    Flatten: _rule_fold,
    Neuron: _rule_neuron,
    Readout: _rule_readout,
    Add: _rule_add,
}



def lower_float(graph: SpikeGraph, graded: bool = False) -> LavaPlan:
    """A validated graph -> its float LavaPlan (pure data); raises LoweringError with a one-line
    reason. ``graded=True`` lowers spike counts (SEW spike ADD) to Loihi 2 graded messages.
    Ops without a rule are refused by the backend (``LavaBackend.check_ops``) before this."""
    ctx = _Ctx(graph, graded)
    for n in graph.order():
        op = graph.op(n)
        RULES[type(op)](ctx, n, op)
    for build in ctx.deferred:
        build()
    if ctx.readout is None:
        raise LoweringError("graph has no Readout")

    # depths (alignment offsets), in creation order == graph order
    depth = {ctx.source["name"]: 0} if ctx.source else {}
    into: dict = {}
    for e in ctx.edges:
        into.setdefault(e.dst, []).append(e)
    for name in ctx.pops:
        ds = [depth[e.src] + 1 - e.delay for e in into.get(name, ()) if e.src in depth]
        depth[name] = max([0] + ds)
        ctx.pops[name].depth = depth[name]

    pops, conns, dyns = dict(ctx.pops), [], []
    relays: dict = {}

    def relay(src, k):  # population that repeats src's spikes (a count: graded) k steps later
        if k == 0:
            return src
        key = (src, k)
        if key not in relays:
            prev = relay(src, k - 1)
            size = pops[src].size if src in pops else ctx.source["size"]
            name = f"{src}~relay{k}" if src != "~clock" else f"~clock{k}"
            if src in pops and pops[src].graded:
                pops[name] = Pop(name, PopRole.GRADED_RELAY, size, 0.0, 0.0, 0.0, depth=depth.get(src, 0) + k)
                note = "graded relay (CSR identity)"
            else:
                pops[name] = Pop(name, PopRole.RELAY if src != "~clock" else PopRole.CLOCK, size, 1.0, 1.0, 0.5,
                                 depth=depth.get(src, 0) + k)
                note = ""
            conns.append(Conn(f"{name}.in", prev, name, identity(size),
                              ConnRole.RELAY if src != "~clock" else ConnRole.CLOCK, kind=ConnKind.SPARSE, note=note))
            relays[key] = name
        return relays[key]

    names: set = set()
    for e in ctx.edges:
        hops = depth[e.dst] - depth[e.src] + e.delay
        if hops < 1:
            raise LoweringError(f"edge {e.nodes[0]!r} -> {e.dst!r}: a delay-{e.delay} edge from a population "
                                f"{depth[e.src] - depth[e.dst]} hops deeper cannot be realised with Lava's "
                                f"one-step Dense delay")
        src = relay(e.src, hops - 1)
        name = f"{e.nodes[0]}->{e.dst}" if e.role is not ConnRole.POOL else f"{e.dst}.window"
        base, i = name, 1
        while name in names:   # the same input twice (e.g. Add(a, a)): distinct process names
            i += 1
            name = f"{base}#{i}"
        names.add(name)
        conns.append(Conn(name, src, e.dst, e.weight, e.role, e.nodes, e.delay, hops, e.kind, e.conv, e.note))

    # biases grouped by start column (depth + delay); column 0 -> bias_mant, else clock Dense
    groups: dict = {}
    for name, delay, vec, node, scale in ctx.biases:
        col = depth[name] + delay
        g = groups.setdefault((name, col), {"const": np.zeros(pops[name].size), "terms": []})
        if vec is not None:
            g["const"] = g["const"] + vec
        else:
            g["terms"].append((node, scale))
    for (name, col), g in groups.items():
        if col == 0:
            pops[name].bias = g["const"]
            if g["terms"]:
                dyns.append(Dyn(name, DynVar.BIAS, g["const"], g["terms"]))
        else:
            if "~clock" not in pops:
                pops["~clock"] = Pop("~clock", PopRole.CLOCK, 1, 1.0, 1.0, 0.5, bias=np.ones(1))
                depth["~clock"] = 0
            cname = f"{name}.bias@{col}"
            conns.append(Conn(cname, relay("~clock", col - 1), name, g["const"][:, None], ConnRole.BIAS,
                              tuple(n for n, _ in g["terms"]), 0, col))
            if g["terms"]:
                dyns.append(Dyn(cname, DynVar.WEIGHTS, g["const"][:, None], g["terms"]))
    for p in pops.values():
        if p.bias is None:
            p.bias = np.zeros(p.size)
        if p.role is PopRole.OR:
            p.record = True
    if any(p.graded for p in pops.values()):
        _graded_bounds(pops, conns)
        for c in conns:
            sp = pops.get(c.src)
            if sp is not None and sp.graded:
                c.bits = max(1, int(sp.max_value).bit_length())
                if c.bits > GRADED_MAX_BITS:  # pragma: no cover - needs > 16 M summed spikes
                    raise LoweringError(f"node {sp.node or c.src!r}: spike counts up to {sp.max_value} need "
                                        f"{c.bits} bits; graded messages carry {GRADED_MAX_BITS}")
                c.note = (c.note + "; " if c.note else "") + f"graded message ({c.bits} bits)"
    max_depth = max([p.depth for p in pops.values() if p.record] + [0])
    return LavaPlan(graph.name, Precision.FLOAT, pops, conns, dyns, ctx.source, ctx.readout,
                    [n for n in graph.order() if n in ctx.static], max_depth, graded=graded)


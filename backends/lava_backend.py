"""Lower a fully spiking SpikeGraph onto Lava processes and run it (lava-nc 0.10, CPU sim).

Lowering (one rule per IR op class, table ``_RULES``; an op without a rule raises
:class:`LoweringError` naming the op class and node; graphs that are not fully spiking
are refused with ``check_fully_spiking``'s first violation)::

    Input  direct  -> no process: its constant current is folded into a population bias
           spike   -> lava.proc.io.source.RingBuffer (one buffer holding the whole batch)
    Dense          -> lava.proc.dense.Dense (weights scaled by the target's 1/tau)
    Conv           -> chosen per synapse (Conn.kind / Conn.note, in lava.json and summary.txt):
                      * lava.proc.conv.process.Conv when the conv reads a spike source's
                        (C, H, W) vector directly (a population, an OR pool, the spike input).
                        Populations stay 1-D C-order vectors; Lava's Conv ports are (X, Y, C),
                        here (H, W, C), bridged with virtual ports:
                        s_out.reshape((C, H, W)).transpose((1, 2, 0)) -> Conv.s_in and
                        Conv.a_out.transpose((2, 0, 1)).reshape((n,)) -> LIF.a_in. Weight
                        (C_out, kh, kw, C_in) spatially flipped (:func:`lava_kernel`: the CPU
                        model uses scipy convolve2d, a true convolution); padding/stride given
                        as (H, W). Same one-step delay as Dense (sends a_buf first).
                      * otherwise (an avg/sum pool folded in front of it) the unrolled (Toeplitz)
                        matrix, built sparse and vectorised: lava Dense when it has <=
                        DENSE_MAX_ENTRIES entries, else lava Sparse (CSR).
                      The plan keeps the kernel in snncc's layout; no out x in matrix is built.
    Identity spike paths, relays, OR windows -> lava.proc.sparse.process.Sparse (CSR)
    Pool  avg/sum  -> folded into the consuming synapse's matrix (W_syn @ P), no process
          max      -> an "OR" population (IF, du = dv = 1, vth = 0.5, weight 1 from each
                      window element): adds one Dense hop; see Timing.
    Flatten        -> index identity on C-order vectors (folded, no process)
    Neuron         -> lava.proc.lif.LIF
    Readout        -> lava.proc.io.sink.RingBuffer on every recorded population; the
                      readout counts come from the (re-aligned) recorded trains
    recurrent delayed edge -> the Dense's natural one-step delay (see Timing)
    Add            -> only with graded spikes (below); otherwise refused (a SEW spike ADD
                      first by the validator, with a hint at the option)

Graded spikes (``lower(graph, graded=True)``, CLI ``--graded-spikes``; Loihi 2 sends
integer payloads with a spike). A graph that is not fully spiking only because spike counts
(Kind.COUNT: a SEW spike ADD of spike sources/counts) reach a synapse or a population is
then lowered with graded messages instead of being refused:

    Add (COUNT)    -> lava.proc.graded.process.GradedVec (vth = 0, exp = 0): v = a_in,
                      s_out = v * (|v| > 0), i.e. it forwards its input, the spike count,
                      as a graded spike in the same step. Each addend reaches it through
                      an identity (or sum-pool 0/1) Sparse, one hop like any synapse, so a
                      GradedVec has a depth like a population. Its outgoing Dense / Sparse /
                      Conv get num_message_bits = bit length of the largest possible count
                      (> 0: Lava's models then use the payload, weights.dot(s_in), instead of
                      the binary spike mask); relays of a count are GradedVec too.
    ANALOG values  -> still refused (a MS membrane shortcut, an analog readout ...): the
                      validator's first non-count violation, one line, naming the node.

Lava 0.10 ships GradedVec with a fixed_pt model only; the float run uses
:func:`graded_float_model`, Lava's own AbstractGradedVecModel with float ports, chosen with
``Loihi2SimCfg(exception_proc_model_map=...)``. In fixed point Lava's PyGradedVecModelFixed
is used: the counts are exact integers and the bit-accurate Dense/Sparse/Conv models compute
the same integer sums (lava_fixed reproduces them; Lava == integer reference, tested).
The plan lists the graded edges (``LavaPlan.graded_edges``, lava.json ``graded_edges``,
summary "graded messages").

Parameter mapping (derivation). snncc's LIF step with input current x is
``h = v + (x - (v - v_rest)) / tau``, fire on ``h >= v_th``, hard reset to ``v_reset``
(``v_rest = v_reset``). Shift the state, w = v - v_reset: w starts at 0, resets to 0
(exactly Lava's reset) and ``w' = w (1 - 1/tau) + x / tau``. Lava's float LIF is
``u = u (1 - du) + a_in; v = v (1 - dv) + u + bias; spike if v > vth; v = 0``. So:

    du = 1            (u = a_in: it carries only this step's input; u is never reset,
                       but du = 1 overwrites it every step)
    dv = 1 / tau      (IF: dv = 0)
    weights, synapse bias and direct-input currents scaled by 1/tau (IF: by 1)
    bias = b / tau    (the brief's extra v_rest/tau term cancels in shifted coordinates)
    vth  = nextafter(v_th - v_reset, -inf)   (w >= a  <=>  w > nextafter(a, -inf) in float)

Soft reset (v' = h - v_th s) has no Lava LIF equivalent (Lava zeroes v and loses the
residual h - v_th) and is refused.

Inputs. A direct-encoded (analog) input reaches the first synapse as the same current
W x + b at every step, so that current (computed with the reference's own torch rules,
bit-identical to the oracle) becomes the first populations' bias, set per sample with
``bias_mant.set``. A spike-encoded input is replayed by a source RingBuffer.

Timing. Every Dense hop adds one step. Each spike source S (population, OR pool, spike
input) gets a depth d(S): Lava column k of a sample carries reference step k - d(S).
Direct-input-fed populations and the spike input have depth 0; a population B gets
d(B) = max over its same-step inputs of d(S) + 1 - delay. An edge S -> B with reference
delay delta then needs H = d(B) - d(S) + delta >= 1 Lava hops: one Dense hop plus H - 1
identity relay populations (IF, du = dv = 1, vth = 0.5). A recurrent delay-1 self edge
needs exactly the Dense's one hop; an edge that would need H < 1 is refused.
Synapse biases must start at column d(B) (+ the synapse->neuron delay), not at column 0,
so they are fed through a Dense from a "clock" relay chain that fires at every column
from k on; only biases starting at column 0 use bias_mant. Each sample runs
T + max depth steps from zero state (v, u, Dense a_buff set to 0 between samples, no
rebuild), and each population's train is read from columns d .. d + T - 1.
With all state zero and no input before its depth, a population is silent there, so the
re-aligned trains are the reference trains exactly (up to float rounding order: the
tests compare them spike for spike).

The runtime is always stopped (try/finally).

Performance note (measured, 784-1024-1024-10 LIF MLP, T=100, CPU float sim): about
2.5-4.7 ms per Lava step, but reading the sinks back dominates (about 8 s for ~420k
recorded values): lava 0.10's Var.get sends arrays one element per message. A packed
(bit-per-step) recorder process would cut that ~50x; not done yet. Lava's CPU Conv model
is a Python loop of scipy convolve2d calls over (C_out, C_in) pairs per step: fine for
small CNNs; from reading the model (not measured), a 512x512-channel layer means ~262k
scipy calls per step, so ResNet-sized graphs lower/compile fast (snncc.bench.compile_bench)
but are not practical to simulate on Lava's CPU backend.

Fixed point: ``lower(graph, fixed_point=True)`` is this float plan plus integer parameters
from :mod:`snncc.backends.lava_fixed` (its docstring: Lava's bit-accurate arithmetic, the
quantisation, what is exact); ``run`` then builds the LIF/Dense processes from those and uses
``Loihi2SimCfg(select_tag="fixed_pt")``. :func:`quantization_report` below is the older quick
8-bit weight analysis; the fixed-point report is ``plan.fixed.report``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout, is_synapse
from snncc.ir.types import GraphError, Kind
from snncc.runtime import RunResult, check_input

__all__ = ["LoweringError", "LavaPlan", "lower", "run", "compile_graph", "load_artifact",
           "quantization_report", "graded_float_model"]

FORMAT = "snncc-lava/1"
GRADED_ROLES = ("graded", "graded-relay")
GRADED_MAX_BITS = 24       # GradedVec's fixed_pt ports carry 24-bit payloads
_GRADED_HINT = ("its spike counts can be sent as Loihi 2 graded spikes: snncc compile/run --graded-spikes, "
                "lower(graded=True)")
_KIND_NAME = {"dense": "Dense", "sparse": "Sparse", "conv": "Conv"}
# A Toeplitz (unrolled) synapse matrix with at most this many entries is stored dense
# (lava Dense); a larger one stays scipy CSR (lava Sparse).
DENSE_MAX_ENTRIES = 1 << 22


def _conv_json(cv: dict) -> dict:
    return {k: list(v) for k, v in cv.items()} | {
        "lava_layout": "ports (X, Y, C) = (H, W, C) via s_out.reshape(C,H,W).transpose(1,2,0) and "
                       "a_out.transpose(2,0,1).reshape(-1); weight (C_out, kh, kw, C_in) spatially flipped"}


class LoweringError(ValueError):
    """The graph cannot be lowered onto Lava; the one-line message says which node and why."""


# -- the lowered program (plain data; built into Lava processes by _build) ---------------------
@dataclass
class Pop:
    name: str
    role: str              # neuron | or | relay | clock | graded | graded-relay (GradedVec)
    size: int
    du: float
    dv: float
    vth: float
    depth: int = 0
    bias: np.ndarray | None = None     # constant bias_mant (column-0 biases only)
    node: str | None = None            # graph node it realises
    shape: tuple = ()
    scale: float = 1.0                 # 1/tau for LIF, 1 otherwise
    record: bool = False
    max_value: int = 1                 # largest value it sends (graded: the largest spike count)

    @property
    def graded(self) -> bool:
        return self.role in GRADED_ROLES

    @property
    def lava_type(self) -> str:
        return "GradedVec" if self.graded else "LIF"


@dataclass
class Conn:
    name: str
    src: str
    dst: str
    weight: np.ndarray
    role: str              # synapse | identity | pool | relay | clock | bias
    nodes: tuple = ()
    delay: int = 0         # reference delay of the path
    hops: int = 1          # Lava hops of the realised path (relays included)
    kind: str = "dense"    # Lava process: dense (lava Dense) | sparse (lava Sparse) | conv (lava Conv)
    conv: dict | None = None   # kind conv: in_shape (C,H,W), out_shape (Co,Ho,Wo), stride, padding
    note: str = ""         # why this process type (recorded in lava.json and the summary)
    bits: int = 0          # num_message_bits: 0 binary spikes, > 0 graded messages (counts)

    @property
    def out_size(self) -> int:
        if self.kind == "conv":
            return int(np.prod(self.conv["out_shape"]))
        return int(self.weight.shape[0])


@dataclass
class Dyn:
    """A per-sample parameter: const + sum(scale * static value of node) (direct-input currents)."""
    target: str            # pop name (bias_mant) or conn name (weights, column vector)
    var: str               # bias_mant | weights
    const: np.ndarray
    terms: list = field(default_factory=list)   # [(graph node, scale)]


@dataclass
class LavaPlan:
    graph_name: str
    precision: str
    pops: dict
    conns: list
    dyns: list
    source: dict | None     # {"name", "node", "size"} for a spike input
    readout: dict           # {"node", "pop", "mode"}
    static: list            # graph nodes computed once per sample (direct input chain)
    max_depth: int
    fixed: object = None    # lava_fixed.FixedParams when precision == "fixed_pt"
    graded: bool = False    # lowered with graded spikes allowed (lower(graded=True))

    @property
    def graded_edges(self) -> list:
        """The connections that carry graded messages (spike counts), in plan order."""
        return [c for c in self.conns if c.bits > 0]

    def steps_per_sample(self, timesteps: int) -> int:
        return timesteps + self.max_depth

    def to_json(self) -> dict:
        def arr(a):
            if a is None:
                return None
            if sparse.issparse(a):
                return {"shape": list(a.shape), "min": float(a.min()) if a.nnz else 0.0,
                        "max": float(a.max()) if a.nnz else 0.0, "nonzero": int(a.count_nonzero()),
                        "format": "csr"}
            a = np.asarray(a)
            if a.size <= 64:
                return a.tolist()
            return {"shape": list(a.shape), "min": float(a.min()), "max": float(a.max()),
                    "nonzero": int(np.count_nonzero(a))}
        return {
            "format": FORMAT, "graph": self.graph_name, "precision": self.precision,
            "run_config": f'Loihi2SimCfg(select_tag="{self.precision}"'
                          + (", exception_proc_model_map={GradedVec: snncc float GradedVec model})"
                             if self.precision == "floating_pt" and any(p.graded for p in self.pops.values())
                             else ")"),
            "steps_per_sample": "timesteps + %d" % self.max_depth, "max_depth": self.max_depth,
            "source": self.source, "readout": self.readout, "static_nodes": self.static,
            "graded_spikes": self.graded,
            "graded_edges": [{"name": c.name, "src": c.src, "dst": c.dst, "num_message_bits": c.bits,
                              "max_value": self.pops[c.src].max_value, "graph_node": self.pops[c.src].node}
                             for c in self.graded_edges],
            "processes": [
                ({"name": p.name, "type": "GradedVec", "role": p.role, "graph_node": p.node,
                  "shape": [p.size], "graph_shape": list(p.shape), "vth": 0, "exp": 0,
                  "max_value": p.max_value, "alignment_offset": p.depth, "recorded": p.record}
                 if p.graded else
                 {"name": p.name, "type": "LIF", "role": p.role, "graph_node": p.node,
                  "shape": [p.size], "graph_shape": list(p.shape), "du": p.du, "dv": p.dv,
                  "vth": p.vth, "bias_mant": arr(p.bias), "weight_scale": p.scale,
                  "alignment_offset": p.depth, "recorded": p.record})
                for p in self.pops.values()] + [
                {"name": c.name, "type": _KIND_NAME[c.kind], "role": c.role, "graph_nodes": list(c.nodes),
                 "weights": arr(c.weight), "src": c.src, "dst": c.dst, "num_message_bits": c.bits,
                 "reference_delay": c.delay, "lava_hops": c.hops, "lowering": c.note}
                | ({"conv": _conv_json(c.conv)} if c.conv is not None else {})
                for c in self.conns],
            "connections": [[c.src + ".s_out", c.name + ".s_in"] for c in self.conns]
                           + [[c.name + ".a_out", c.dst + ".a_in"] for c in self.conns],
            "per_sample": [{"target": d.target, "var": d.var,
                            "terms": [[n, s] for n, s in d.terms]} for d in self.dyns],
        } | ({"quantization": self.fixed.to_json()} if self.fixed is not None else {})

    def summary(self) -> str:
        lines = [f"Lava program for graph {self.graph_name!r} ({self.precision}"
                 + (", graded spikes" if self.graded else "") + ")",
                 f"  steps per sample: T + {self.max_depth} (alignment)"]
        if self.source:
            lines.append(f"  source RingBuffer {self.source['name']} [{self.source['size']}]")
        for p in self.pops.values():
            if p.graded:
                lines.append(f"  GradedVec {p.name:<19} {p.role:<7} n={p.size:<6} vth=0 max count={p.max_value} "
                             f"offset={p.depth}")
                continue
            lines.append(f"  LIF    {p.name:<22} {p.role:<7} n={p.size:<6} du={p.du:g} dv={p.dv:g} "
                         f"vth={p.vth!r} offset={p.depth}" + (" recorded" if p.record else ""))
        for c in self.conns:
            shape = (f"kernel {list(c.weight.shape)} stride={list(c.conv['stride'])} "
                     f"pad={list(c.conv['padding'])}") if c.kind == "conv" else str(list(c.weight.shape))
            lines.append(f"  {_KIND_NAME[c.kind]:<6} {c.name:<22} {c.role:<8} {c.src} -> {c.dst} "
                         f"{shape} delay={c.delay} hops={c.hops}" + (f" num_message_bits={c.bits}" if c.bits else "")
                         + (f"  [{c.note}]" if c.note else ""))
        for d in self.dyns:
            lines.append(f"  per-sample {d.var} of {d.target} from " + ", ".join(n for n, _ in d.terms))
        lines.append(f"  readout {self.readout['node']} <- {self.readout['pop']} ({self.readout['mode']})")
        if self.graded:
            edges = self.graded_edges
            lines.append(f"  graded messages (COUNT edges lowered as graded spikes): {len(edges)}"
                         + ("" if edges else " (the graph is fully spiking: nothing needed them)"))
            for c in edges:
                lines.append(f"    {c.src} -> {c.name} -> {c.dst}: spike counts 0..{self.pops[c.src].max_value}, "
                             f"num_message_bits={c.bits}")
        if self.fixed is not None:
            lines.append(self.fixed.summary())
        return "\n".join(lines)


# -- matrices ---------------------------------------------------------------------------------
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


def pool_matrix(shape, kernel, stride, padding, value) -> np.ndarray:
    return pool_matrix_sparse(shape, kernel, stride, padding, value).toarray()


def lava_kernel(weight: np.ndarray) -> np.ndarray:
    """snncc/torch conv weight (C_out, C_in, kh, kw), cross-correlation -> lava Conv weight
    (C_out, X, Y, C_in) with X = H, Y = W. Lava's CPU conv (scipy convolve2d) is a true
    convolution, so the kernel is flipped in both spatial axes."""
    return np.ascontiguousarray(np.asarray(weight)[:, :, ::-1, ::-1].transpose(0, 2, 3, 1))


def _identity(n: int) -> sparse.csr_matrix:
    return sparse.identity(n, dtype=np.float64, format="csr")


def _as_matrix(m, note: str):
    """(weight, kind, note): CSR kept sparse when large, else a dense ndarray."""
    if sparse.issparse(m):
        if m.shape[0] * m.shape[1] <= DENSE_MAX_ENTRIES:
            return m.toarray(), "dense", note
        return m.tocsr(), "sparse", note + f" (CSR: {m.shape[0]}x{m.shape[1]} too large for Dense)"
    return np.asarray(m, dtype=np.float64), "dense", note


# -- lowering ---------------------------------------------------------------------------------
@dataclass
class _Edge:
    src: str
    dst: str
    weight: object                 # ndarray (Dense) | CSR (Sparse) | conv kernel (Conv)
    delay: int
    role: str
    nodes: tuple
    kind: str = "dense"
    conv: dict | None = None
    note: str = ""


class _Ctx:
    def __init__(self, graph: SpikeGraph, precision: str, graded: bool = False):
        self.g = graph
        self.types = graph.infer()
        self.precision = precision
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
        if isinstance(op, Flatten) or (isinstance(op, Pool) and op.mode in ("avg", "sum")):
            (p,) = self.g.inputs(node)
            if p.src in self.static:
                self.fail(node, "static (direct-input) value used where spikes are expected")
            src, m, d = self.resolve(p.src)
            if isinstance(op, Pool):
                k = op.kernel[0] * op.kernel[1]
                pm = pool_matrix_sparse(self.types[p.src].shape, op.kernel, op.stride, op.padding,
                                        1.0 / k if op.mode == "avg" else 1.0)
                m = pm if m is None else pm @ m
            return src, m, d + p.delay
        self.fail(node, "cannot be lowered as a spike source or a linear fold into a synapse")


def _rule_input(ctx, n, op):
    if op.encoding == "direct":
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
    if op.mode != "max":
        return  # folded into the consuming synapse
    (p,) = ctx.g.inputs(n)
    if ctx.types[p.src].kind is not Kind.SPIKE or not isinstance(ctx.g.op(p.src), (Neuron, Pool, Input)):
        ctx.fail(n, f"max pooling of {ctx.types[p.src].kind.value} values from {p.src!r}: "
                    "only max pooling of a population's spikes (an OR) is lowered")
    m = pool_matrix_sparse(ctx.types[p.src].shape, op.kernel, op.stride, op.padding, 1.0)
    ctx.pops[n] = Pop(n, "or", ctx.types[n].size, 1.0, 1.0, 0.5, node=n, shape=ctx.types[n].shape)
    ctx.sources[n] = n
    ctx.deferred.append(lambda: ctx.edges.append(_Edge(ctx.resolve(p.src)[0], n, m, p.delay, "pool", (n,),
                                                       "sparse", None, "OR window (0/1 CSR)")))


def _rule_synapse(ctx, n, op):
    if _all_static(ctx, n):
        ctx.static.add(n)
    elif any(p.src in ctx.static for p in ctx.g.inputs(n)):
        ctx.fail(n, "delayed edge from the direct-encoded input is not supported")


def _synapse_matrix(ctx, n, op):
    if isinstance(op, Dense):
        return np.asarray(op.weight, dtype=np.float64)
    (p,) = ctx.g.inputs(n)
    return conv_matrix_sparse(op.weight, ctx.types[p.src].shape, op.stride, op.padding)


def _synapse_edge(ctx, src, sop, s, m, scale, delay, dst):
    """Choose the Lava process of one synapse: a Conv reading a spike source's (C, H, W)
    vector directly -> lava Conv; anything with a folded avg/sum pool (Toeplitz product) or a
    Dense op -> a matrix (dense, or CSR when large)."""
    (sp,) = ctx.g.inputs(src)
    if isinstance(sop, Conv) and m is None:
        cv = {"in_shape": tuple(ctx.types[sp.src].shape), "out_shape": tuple(ctx.types[src].shape),
              "stride": tuple(int(v) for v in sop.stride), "padding": tuple(int(v) for v in sop.padding)}
        w = np.asarray(sop.weight, dtype=np.float64) * scale
        return _Edge(s, dst, w, delay, "synapse", (src,), "conv", cv, "lava Conv")
    if isinstance(sop, Conv):
        w = _synapse_matrix(ctx, src, sop) @ m
        why = "Toeplitz: " + ("avg/sum pool folded into the conv" if m is not None else "conv")
    else:
        w = np.asarray(sop.weight, dtype=np.float64)
        w = w if m is None else np.asarray((m.T @ w.T).T)
        why = "" if m is None else "pool/flatten folded"
    w, kind, why = _as_matrix(w, why)
    return _Edge(s, dst, w * scale, delay, "synapse", (src,), kind, None, why)


def _rule_neuron(ctx, n, op):
    prm = op.params
    if op.heterogeneous:
        ctx.fail(n, "per-neuron parameters (tau, v_th, v_reset, tau_syn arrays) are not lowered to Lava: its LIF "
                    "has one du, dv and vth per process; run it with the torch or numba backend")
    if prm.soft:
        ctx.fail(n, "soft reset (reset by subtraction) has no exact Lava LIF equivalent "
                    "(Lava's LIF resets v to 0); use hard reset")
    leaky, inv_tau, v_th, v_reset, v_rest, _ = prm.scalars()
    scale = inv_tau if leaky else 1.0
    du = 1.0
    if op.current_based:  # CUBA is Lava's LIF with du = 1/tau_syn: u = J/tau, inputs scaled by 1/(tau tau_syn)
        du = 1.0 / prm.tau_syn
        scale *= du
        if any(p.src in ctx.static or getattr(ctx.g.op(p.src), "bias", None) is not None for p in ctx.g.inputs(n)):
            ctx.fail(n, "a current-based LIF fed by the direct-encoded input or a synapse bias: Lava adds those "
                        "to v, past the synaptic current")
    vth = float(np.nextafter(v_th - v_reset, -np.inf))
    ctx.pops[n] = Pop(n, "neuron", ctx.types[n].size, du, inv_tau if leaky else 0.0, vth, node=n,
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
            w = _identity(ctx.types[n].size) if m is None else sparse.csr_matrix(m)
            ctx.edges.append(_Edge(s, n, w * scale, port.delay + d, "identity", (src,), "sparse", None,
                                   "identity spike path (CSR)"))


def _rule_add(ctx, n, op):
    """A spike ADD (COUNT) -> a GradedVec forwarding the count as a graded spike."""
    if not ctx.graded:
        raise LoweringError(f"no Lava lowering rule for op Add (node {n!r}) with binary spikes; {_GRADED_HINT}")
    kind = ctx.types[n].kind
    if kind is not Kind.COUNT:
        ctx.fail(n, f"adds {kind.value} values (a membrane shortcut): graded spikes carry spike counts only")
    ctx.pops[n] = Pop(n, "graded", ctx.types[n].size, 0.0, 0.0, 0.0, node=n, shape=ctx.types[n].shape)
    ctx.sources[n] = n
    ctx.deferred.append(lambda: _add_edges(ctx, n))


def _add_edges(ctx, n):
    for port in ctx.g.inputs(n):
        src, m, d = ctx.resolve(port.src)
        w = _identity(ctx.types[n].size) if m is None else sparse.csr_matrix(m)
        if not np.all(np.isin(w.data, (0.0, 1.0))):  # pragma: no cover - only sum pools fold in here
            ctx.fail(n, f"input {port.src!r} is not a 0/1 path of spikes or counts")
        ctx.edges.append(_Edge(src, n, w, port.delay + d, "add", (port.src,), "sparse", None,
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


_RULES = {
    Input: _rule_input,
    Dense: _rule_synapse,
    Conv: _rule_synapse,
    Pool: _rule_pool,
    Flatten: _rule_fold,
    Neuron: _rule_neuron,
    Readout: _rule_readout,
    Add: _rule_add,
}


def _check_spiking(graph: SpikeGraph, graded: bool) -> None:
    """Refuse a graph that is not fully spiking with the validator's first violation; with
    ``graded``, violations that are spike counts (Kind.COUNT) are accepted (graded messages)."""
    from snncc.passes.validate import check_fully_spiking
    try:
        graph.infer()
        report = check_fully_spiking(graph)
    except GraphError as e:
        raise LoweringError(f"invalid graph: {e}") from None
    rest = [v for v in report.violations if v.kind != Kind.COUNT.value]
    if not graded and report.violations:
        hint = f" ({_GRADED_HINT})" if not rest else ""
        raise LoweringError(f"graph is not fully spiking: {report.violations[0]}{hint}")
    if rest:
        raise LoweringError(f"graph is not fully spiking, even with graded spikes (they carry spike counts, "
                            f"not {rest[0].kind} values): {rest[0]}")


def lower(graph: SpikeGraph, fixed_point: bool = False, graded: bool = False) -> LavaPlan:
    """Lower a graph to a LavaPlan (pure data); raises LoweringError with a one-line reason.
    ``graded=True`` lowers spike counts (SEW spike ADD) to Loihi 2 graded messages (module
    docstring); without it a graph that is not fully spiking is refused."""
    if fixed_point:  # the float plan + quantised integer parameters (lava_fixed)
        from snncc.backends.lava_fixed import lower_fixed
        return lower_fixed(graph, graded=graded)
    _check_spiking(graph, graded)
    ctx = _Ctx(graph, "floating_pt", graded)
    for n in graph.order():
        op = graph.op(n)
        rule = _RULES.get(type(op))
        if rule is None:
            raise LoweringError(f"no Lava lowering rule for op {type(op).__name__} (node {n!r})")
        rule(ctx, n, op)
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
                pops[name] = Pop(name, "graded-relay", size, 0.0, 0.0, 0.0, depth=depth.get(src, 0) + k)
                note = "graded relay (CSR identity)"
            else:
                pops[name] = Pop(name, "relay" if src != "~clock" else "clock", size, 1.0, 1.0, 0.5,
                                 depth=depth.get(src, 0) + k)
                note = ""
            conns.append(Conn(f"{name}.in", prev, name, _identity(size), "relay" if src != "~clock" else "clock",
                              kind="sparse", note=note))
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
        name = f"{e.nodes[0]}->{e.dst}" if e.role != "pool" else f"{e.dst}.window"
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
                dyns.append(Dyn(name, "bias_mant", g["const"], g["terms"]))
        else:
            if "~clock" not in pops:
                pops["~clock"] = Pop("~clock", "clock", 1, 1.0, 1.0, 0.5, bias=np.ones(1))
                depth["~clock"] = 0
            cname = f"{name}.bias@{col}"
            conns.append(Conn(cname, relay("~clock", col - 1), name, g["const"][:, None], "bias",
                              tuple(n for n, _ in g["terms"]), 0, col))
            if g["terms"]:
                dyns.append(Dyn(cname, "weights", g["const"][:, None], g["terms"]))
    for p in pops.values():
        if p.bias is None:
            p.bias = np.zeros(p.size)
        if p.role == "or":
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
    return LavaPlan(graph.name, ctx.precision, pops, conns, dyns, ctx.source, ctx.readout,
                    [n for n in graph.order() if n in ctx.static], max_depth, graded=graded)


# -- execution --------------------------------------------------------------------------------
def _static_values(graph: SpikeGraph, plan: LavaPlan, x: np.ndarray) -> dict:
    """Per-sample values of the static (direct-input) nodes, with the reference's own rules."""
    from snncc.backends.torch_backend import _RULES as TORCH_RULES
    vals = {}
    with torch.no_grad():
        for n in plan.static:
            op = graph.op(n)
            if isinstance(op, Input):
                vals[n] = torch.as_tensor(x, dtype=torch.float64)
            else:
                vals[n] = TORCH_RULES[type(op)](op, [vals[p.src] for p in graph.inputs(n)], {})
    return {n: v.reshape(v.shape[0], -1).numpy() for n, v in vals.items()}


def _dyn_value(d: Dyn, static: dict, b: int) -> np.ndarray:
    v = d.const.copy()
    for node, scale in d.terms:
        term = static[node][b] * scale
        v = v + (term[:, None] if d.var == "weights" else term)
    return v


_GRADED_FLOAT_MODEL = None


def graded_float_model():
    """A floating_pt ProcessModel for Lava's GradedVec (Lava 0.10 ships only a fixed_pt one):
    Lava's own AbstractGradedVecModel (v += a_in; s_out = v * (|v| > vth); v = 0), with float
    ports and state. Selected per run with Loihi2SimCfg(exception_proc_model_map=...)."""
    global _GRADED_FLOAT_MODEL
    if _GRADED_FLOAT_MODEL is None:
        from snncc.compat.lava import import_lava
        import_lava()
        from lava.magma.core.decorator import implements, requires, tag
        from lava.magma.core.model.py.ports import PyInPort, PyOutPort
        from lava.magma.core.model.py.type import LavaPyType
        from lava.magma.core.resources import CPU
        from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
        from lava.proc.graded.models import AbstractGradedVecModel
        from lava.proc.graded.process import GradedVec

        @implements(proc=GradedVec, protocol=LoihiProtocol)
        @requires(CPU)
        @tag("floating_pt")
        class PyGradedVecModelFloat(AbstractGradedVecModel):
            a_in = LavaPyType(PyInPort.VEC_DENSE, float)
            s_out = LavaPyType(PyOutPort.VEC_DENSE, float)
            vth: np.ndarray = LavaPyType(np.ndarray, float)
            v: np.ndarray = LavaPyType(np.ndarray, float)
            exp: np.ndarray = LavaPyType(np.ndarray, int)

        _GRADED_FLOAT_MODEL = PyGradedVecModelFloat
    return _GRADED_FLOAT_MODEL


def _run_cfg(L, plan: LavaPlan):
    if plan.precision == "floating_pt" and any(p.graded for p in plan.pops.values()):
        from lava.proc.graded.process import GradedVec
        return L.Loihi2SimCfg(select_tag=plan.precision,
                              exception_proc_model_map={GradedVec: graded_float_model()})
    return L.Loihi2SimCfg(select_tag=plan.precision)


def _lava_conn_classes():
    from lava.proc.conv.process import Conv as LavaConv
    from lava.proc.sparse.process import Sparse as LavaSparse
    return LavaConv, LavaSparse


def _connect_conn(proc, c: Conn, src_proc, dst_proc):
    """Wire one synapse process. Populations are 1-D C-order (C, H, W) vectors; a lava Conv's
    ports are (X, Y, C) = (H, W, C), bridged with reshape/transpose virtual ports."""
    if c.kind == "conv":
        ci, h, w = c.conv["in_shape"]
        co, ho, wo = c.conv["out_shape"]
        src_proc.s_out.reshape((ci, h, w)).transpose(axes=(1, 2, 0)).connect(proc.s_in)
        proc.a_out.transpose(axes=(2, 0, 1)).reshape((co * ho * wo,)).connect(dst_proc.a_in)
    else:
        src_proc.s_out.connect(proc.s_in)
        proc.a_out.connect(dst_proc.a_in)


def _build(L, plan: LavaPlan, x: np.ndarray, batch: int, steps: int, timesteps: int):
    procs = {}
    fx = plan.fixed is not None
    LavaConv, LavaSparse = _lava_conn_classes()
    if fx:
        from snncc.backends.lava_fixed import lava_conv_kwargs, lava_dense_kwargs, lava_lif_kwargs
    if plan.source:
        data = np.zeros((plan.source["size"], batch * steps), dtype=np.int32 if fx else np.float64)
        for b in range(batch):
            data[:, b * steps: b * steps + timesteps] = x[b].reshape(timesteps, -1).T
        procs[plan.source["name"]] = L.SourceRingBuffer(data=data)
    for p in plan.pops.values():
        if p.graded:
            from lava.proc.graded.process import GradedVec
            procs[p.name] = GradedVec(shape=(p.size,), vth=0, exp=0)
            procs[p.name].name = p.name
            continue
        kw = lava_lif_kwargs(plan, p.name) if fx else dict(du=p.du, dv=p.dv, vth=p.vth, bias_mant=p.bias.copy())
        procs[p.name] = L.LIF(shape=(p.size,), name=p.name, **kw)
    dense = {}
    for c in plan.conns:
        if c.kind == "conv":
            kw = lava_conv_kwargs(plan, c.name) if fx else dict(weight=lava_kernel(c.weight))
            ci, h, w = c.conv["in_shape"]
            dense[c.name] = LavaConv(name=c.name, input_shape=(h, w, ci), padding=tuple(c.conv["padding"]),
                                     stride=tuple(c.conv["stride"]), num_message_bits=c.bits, **kw)
        elif c.kind == "sparse":
            kw = lava_dense_kwargs(plan, c.name) if fx else dict(weights=sparse.csr_matrix(c.weight, dtype=np.float64))
            dense[c.name] = LavaSparse(name=c.name, num_message_bits=c.bits, **kw)
        else:
            kw = lava_dense_kwargs(plan, c.name) if fx else dict(weights=np.array(c.weight, dtype=np.float64))
            dense[c.name] = L.Dense(name=c.name, num_message_bits=c.bits, **kw)
        _connect_conn(dense[c.name], c, procs[c.src], procs[c.dst])
    sinks = {}
    for p in plan.pops.values():
        if p.record:
            sinks[p.name] = L.SinkRingBuffer(shape=(p.size,), buffer=batch * steps)
            procs[p.name].s_out.connect(sinks[p.name].a_in)
    return procs, dense, sinks


def _zero_buffer(c: Conn, proc, dtype):
    if c.kind == "conv":
        co, ho, wo = c.conv["out_shape"]
        proc.a_buf.set(np.zeros((ho, wo, co), dtype))
    else:
        proc.a_buff.set(np.zeros(c.out_size, dtype))


def _set_dyn(plan, procs, dense, d, value, b, init=False):
    """Give a per-sample parameter its value (fixed point: quantised bias_mant and bias_exp)."""
    if plan.fixed is not None:
        from snncc.backends.lava_fixed import sample_bias
        pairs = zip((procs[d.target].bias_mant, procs[d.target].bias_exp), sample_bias(plan, d.target, value, b))
    else:
        pairs = [(procs[d.target].bias_mant if d.var == "bias_mant" else dense[d.target].weights, value)]
    for var, val in pairs:
        if init:
            var.init = val
        else:
            var.set(val)


def _replay(graph: SpikeGraph, x: np.ndarray, trains: dict, timesteps: int, direct: bool):
    """Activity of every node and the readout, from the recorded trains (reference rules)."""
    from snncc.backends.torch_backend import _RULES as TORCH_RULES
    types = graph.infer()
    order = graph.order()
    batch = x.shape[0]
    xt = torch.as_tensor(x, dtype=torch.float64)
    activity = {n: 0.0 for n in order}
    prev, readout = {}, None
    (out,) = graph.output_nodes
    with torch.no_grad():
        for t in range(timesteps):
            cur = {}
            for n in order:
                op = graph.op(n)
                if isinstance(op, Input):
                    cur[n] = xt if direct else xt[:, t]
                elif isinstance(op, Neuron):
                    cur[n] = torch.as_tensor(trains[n][t], dtype=torch.float64)
                else:
                    xs = [cur[p.src] if p.delay == 0 else
                          prev.get(p.src, torch.zeros((batch, *types[p.src].shape), dtype=torch.float64))
                          for p in graph.inputs(n)]
                    cur[n] = TORCH_RULES[type(op)](op, xs, {})
                activity[n] += float(cur[n].sum())
            prev = cur
            readout = cur[out] if readout is None else readout + cur[out]
    output = readout.numpy()
    if graph.op(out).mode == "mean":
        output = output / timesteps
    return activity, output


def run(graph, x, timesteps: int, record: bool = False, fixed_point: bool = False,
        timing: dict | None = None, graded: bool = False) -> RunResult:
    """Lower ``graph`` (a SpikeGraph, or a (graph, LavaPlan) pair) and run it on Lava's CPU
    simulator (float, or bit-accurate fixed_pt when ``fixed_point`` or the plan says so;
    ``graded``: spike counts as graded messages, see :func:`lower`).
    Samples run one after another from zero state in one runtime."""
    from snncc.compat.lava import import_lava
    plan = None
    if isinstance(graph, tuple):
        graph, plan = graph
    x = check_input(graph, x, timesteps)
    if plan is None:
        plan = lower(graph, fixed_point=fixed_point, graded=graded)
    L = import_lava()
    types = graph.infer()
    (inp,) = graph.input_nodes
    direct = x.ndim == 1 + len(types[inp].shape)
    batch = x.shape[0]
    steps = plan.steps_per_sample(timesteps)
    static = _static_values(graph, plan, x) if direct else {}
    procs, dense, sinks = _build(L, plan, x, batch, steps, timesteps)
    for d in plan.dyns:  # sample 0's values before compilation
        _set_dyn(plan, procs, dense, d, _dyn_value(d, static, 0), 0, init=True)
    anchor = next(iter(procs.values()))
    cfg = _run_cfg(L, plan)
    zero = np.int32 if plan.fixed is not None else np.float64
    raw = {}
    try:
        t0 = time.perf_counter()
        run_s = reset_s = 0.0
        for b in range(batch):
            if b:
                tr = time.perf_counter()
                for p in plan.pops.values():
                    procs[p.name].v.set(np.zeros(p.size, zero))
                    if not p.graded:   # GradedVec: v only (zeroed every step anyway)
                        procs[p.name].u.set(np.zeros(p.size, zero))
                for c in plan.conns:
                    _zero_buffer(c, dense[c.name], zero)
                for d in plan.dyns:
                    _set_dyn(plan, procs, dense, d, _dyn_value(d, static, b), b)
                reset_s += time.perf_counter() - tr
            t1 = time.perf_counter()
            anchor.run(condition=L.RunSteps(steps), run_cfg=cfg)
            t2 = time.perf_counter()
            if b:
                run_s += t2 - t1
            else:
                first_s = t2 - t0
        t3 = time.perf_counter()
        raw = {name: s.data.get() for name, s in sinks.items()}
        readback_s = time.perf_counter() - t3
    finally:
        t4 = time.perf_counter()
        anchor.stop()
        stop_s = time.perf_counter() - t4
    if timing is not None:
        timing.update(first_sample_s=first_s, later_samples_run_s=run_s, steps_per_sample=steps,
                      reset_s=reset_s, readback_s=readback_s, stop_s=stop_s)
    trains = {}
    for name, data in raw.items():
        p = plan.pops[name]
        if p.node is None or p.role == "or":
            continue
        cols = np.stack([data[:, b * steps + p.depth: b * steps + p.depth + timesteps]
                         for b in range(batch)])           # (B, n, T)
        trains[p.node] = (cols.transpose(2, 0, 1) > 0).astype(np.uint8).reshape(
            timesteps, batch, *types[p.node].shape)
    activity, output = _replay(graph, x, trains, timesteps, direct)
    return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                     trains=trains if record else {})


# -- artifacts --------------------------------------------------------------------------------
def compile_graph(graph: SpikeGraph, out_dir, fixed_point: bool = False, graded: bool = False,
                  netx: bool = False) -> Path:
    """Lower ``graph`` and write ``out_dir`` atomically: graph.snn.onnx, lava.json, summary.txt.
    With ``fixed_point=True`` lava.json carries "quantization" (integer parameters and the
    per-layer report) and summary.txt its table. With ``graded=True`` spike counts are lowered
    to graded messages; lava.json records "graded_spikes" and "graded_edges" (so `snncc run`
    of the artifact lowers it the same way) and summary.txt lists them. With ``netx=True`` the
    directory also holds model.net, the lava-dl netx HDF5 network (:mod:`lava_netx`; its own
    netx-convention fixed-point quantisation), described in lava.json "netx" and summary.txt;
    a graph netx cannot express is refused before anything is written."""
    from snncc.fileio import atomic_dir
    from snncc.ir import serialize
    plan = lower(graph, fixed_point=fixed_point, graded=graded)
    ex = None
    if netx:
        from snncc.backends.lava_netx import NETX_FILE, netx_export, write_netx
        ex = netx_export(graph)
    cfg = plan.to_json()
    text = graph.summary() + "\n\n" + plan.summary() + "\n"
    if ex is not None:
        cfg["netx"] = {"file": NETX_FILE, "layers": [lay["type"] for lay in ex.layers],
                       "reset_interval_extra": ex.hops, "reset_offset": ex.reset_offset,
                       "load": f"hdf5.Network(net_config='{NETX_FILE}', reset_interval=T + {ex.hops}, "
                               f"reset_offset={ex.reset_offset})",
                       "quantization": ex.plan.fixed.to_json()}
        text += "\n" + ex.summary(NETX_FILE) + "\n" + ex.plan.fixed.summary().replace(
            "fixed-point quantisation", "netx quantisation (weight_exp 0, bias_exp 6)", 1) + "\n"
    with atomic_dir(out_dir) as tmp:
        serialize.save(graph, tmp / "graph.snn.onnx")
        (tmp / "lava.json").write_text(json.dumps(cfg, indent=1) + "\n")
        (tmp / "summary.txt").write_text(text)
        if ex is not None:
            write_netx(graph, tmp / NETX_FILE, ex=ex)
    return Path(out_dir)


def load_artifact(out_dir):
    """(graph, lava_config dict) from a compile_graph directory; LoweringError (one line) if bad."""
    from snncc.ir import serialize
    d = Path(out_dir)
    if not d.is_dir():
        raise LoweringError(f"{d}: not a compiled Lava artifact directory")
    for f in ("graph.snn.onnx", "lava.json"):
        if not (d / f).is_file():
            raise LoweringError(f"{d}: missing {f} (not a complete Lava artifact)")
    try:
        cfg = json.loads((d / "lava.json").read_text())
    except (OSError, ValueError) as e:
        raise LoweringError(f"{d / 'lava.json'}: corrupt ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise LoweringError(f"{d / 'lava.json'}: not an {FORMAT} process graph")
    try:
        graph = serialize.load(d / "graph.snn.onnx")
    except serialize.SerializeError as e:
        raise LoweringError(str(e).splitlines()[0]) from None
    return graph, cfg


def quantization_report(graph: SpikeGraph) -> list:
    """Per synapse: 8-bit signed mantissa with one shared power-of-two exponent per layer
    (the Lava/Loihi Dense weight format); max |w - q| and the exponent. Analysis only:
    fixed-point execution is not implemented."""
    rows = []
    for n in graph.synapses():
        w = np.asarray(graph.op(n).weight, dtype=np.float64)
        wmax = float(np.abs(w).max())
        exp = int(np.ceil(np.log2(wmax / 127.0))) if wmax > 0 else 0
        q = np.clip(np.round(w / 2.0 ** exp), -128, 127) * 2.0 ** exp
        rows.append({"node": n, "weight_exp": exp, "max_abs_weight": wmax,
                     "max_quant_error": float(np.abs(w - q).max()), "step": 2.0 ** exp})
    return rows

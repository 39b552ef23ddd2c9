"""The lowered Lava program as plain data: populations, connections, per-sample parameters.

Built by :mod:`.lowering`, given integer parameters by :mod:`.fixed`, turned into Lava processes
by :mod:`.build`, written to ``lava.json`` / ``summary.txt`` by :meth:`LavaPlan.to_json` and
:meth:`LavaPlan.summary`. Roles and process kinds are enums (``str`` valued: the JSON and the
summary spell them as before).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from snncc.backends.base import LoweringError, Options
from snncc.backends.lava.matrices import lava_kernel
from snncc.ir.types import StrEnum

__all__ = ["LoweringError", "LavaOptions", "Precision", "PopRole", "ConnRole", "ConnKind", "Pop", "Conn",
           "Dyn", "DynVar", "LavaPlan", "FORMAT", "GRADED_MAX_BITS", "DENSE_MAX_ENTRIES", "FloatParams"]

FORMAT = "snncc-lava/1"
GRADED_MAX_BITS = 24       # GradedVec's fixed_pt ports carry 24-bit payloads
# A Toeplitz (unrolled) synapse matrix with at most this many entries is stored dense
# (lava Dense); a larger one stays scipy CSR (lava Sparse).
DENSE_MAX_ENTRIES = 1 << 22


@dataclass(frozen=True)
class LavaOptions(Options):
    """fixed_point: Loihi bit-accurate integers (select_tag fixed_pt, :mod:`.fixed`);
    graded_spikes: spike counts (SEW spike ADD) as Loihi 2 graded messages; netx: an artifact
    also holds model.net, the lava-dl netx HDF5 network (:mod:`.netx`)."""

    fixed_point: bool = False
    graded_spikes: bool = False
    netx: bool = False


class Precision(StrEnum):
    FLOAT = "floating_pt"
    FIXED = "fixed_pt"


class PopRole(StrEnum):
    NEURON = "neuron"              # a graph population (lava LIF)
    OR = "or"                      # max pool of spikes (IF, vth 0.5)
    RELAY = "relay"                # repeats a source one step later
    CLOCK = "clock"                # fires every step from its depth on (feeds late biases)
    GRADED = "graded"              # spike ADD: GradedVec forwarding the count
    GRADED_RELAY = "graded-relay"  # relay of a count (GradedVec)

    @property
    def graded(self) -> bool:
        return self in (PopRole.GRADED, PopRole.GRADED_RELAY)


class ConnRole(StrEnum):
    SYNAPSE = "synapse"
    IDENTITY = "identity"
    POOL = "pool"
    RELAY = "relay"
    CLOCK = "clock"
    BIAS = "bias"
    ADD = "add"


class DynVar(StrEnum):
    """The Lava variable a per-sample parameter sets."""
    BIAS = "bias_mant"     # a population's bias (column-0 direct-input current)
    WEIGHTS = "weights"    # a clock-fed bias Dense's column (deeper direct-input current)


class ConnKind(StrEnum):
    """The Lava process of a connection."""
    DENSE = "dense"
    SPARSE = "sparse"
    CONV = "conv"

    @property
    def lava_name(self) -> str:
        return {"dense": "Dense", "sparse": "Sparse", "conv": "Conv"}[self.value]


def _conv_json(cv: dict) -> dict:
    return {k: v if isinstance(v, int) else list(v) for k, v in cv.items()} | {
        "lava_layout": "ports (X, Y, C) = (H, W, C) via s_out.reshape(C,H,W).transpose(1,2,0) and "
                       "a_out.transpose(2,0,1).reshape(-1); weight (C_out, kh, kw, C_in / groups) spatially flipped"}


# -- the lowered program (plain data; built into Lava processes by build.build) ----------------
@dataclass
class Pop:
    name: str
    role: PopRole
    size: int
    du: float
    dv: float
    vth: float
    depth: int = 0
    bias: np.ndarray | None = None     # constant bias_mant (column-0 biases only)
    node: str | None = None            # graph node it realises
    shape: tuple = ()
    scale: float = 1.0                 # input scale: NeuronParams.input_gain (/ tau_syn for CUBA)
    record: bool = False
    max_value: int = 1                 # largest value it sends (graded: the largest spike count)

    @property
    def graded(self) -> bool:
        return PopRole(self.role).graded

    @property
    def lava_type(self) -> str:
        return "GradedVec" if self.graded else "LIF"


@dataclass
class Conn:
    name: str
    src: str
    dst: str
    weight: np.ndarray
    role: ConnRole
    nodes: tuple = ()
    delay: int = 0         # reference delay of the path
    hops: int = 1          # Lava hops of the realised path (relays included)
    kind: ConnKind = ConnKind.DENSE
    conv: dict | None = None   # kind conv: in_shape (C,H,W), out_shape (Co,Ho,Wo), stride, padding, dilation, groups
    note: str = ""         # why this process type (recorded in lava.json and the summary)
    bits: int = 0          # num_message_bits: 0 binary spikes, > 0 graded messages (counts)

    @property
    def out_size(self) -> int:
        if self.kind is ConnKind.CONV:
            return int(np.prod(self.conv["out_shape"]))
        return int(self.weight.shape[0])


@dataclass
class Dyn:
    """A per-sample parameter: const + sum(scale * static value of node) (direct-input currents)."""
    target: str            # pop name (bias_mant) or conn name (weights, column vector)
    var: DynVar
    const: np.ndarray
    terms: list = field(default_factory=list)   # [(graph node, scale)]


@dataclass
class LavaPlan:
    graph_name: str
    precision: Precision
    pops: dict
    conns: list
    dyns: list
    source: dict | None     # {"name", "node", "size"} for a spike input
    readout: dict           # {"node", "pop", "mode"}
    static: list            # graph nodes computed once per sample (direct input chain)
    max_depth: int
    fixed: object = None    # fixed.FixedParams when precision is fixed_pt
    graded: bool = False    # lowered with graded spikes allowed (LavaOptions.graded_spikes)

    @property
    def params(self):
        """Where the Lava processes' arguments come from: the fixed-point parameters, or the
        float plan itself (:class:`FloatParams`)."""
        return self.fixed if self.fixed is not None else FloatParams()

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
                             if self.precision is Precision.FLOAT and any(p.graded for p in self.pops.values())
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
                {"name": c.name, "type": c.kind.lava_name, "role": c.role, "graph_nodes": list(c.nodes),
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
                     f"pad={list(c.conv['padding'])} dilation={list(c.conv['dilation'])} groups={c.conv['groups']}") \
                if c.kind is ConnKind.CONV else str(list(c.weight.shape))
            lines.append(f"  {c.kind.lava_name:<6} {c.name:<22} {c.role:<8} {c.src} -> {c.dst} "
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



class FloatParams:
    """The float plan's process arguments (the fixed-point ones: :class:`.fixed.FixedParams`)."""

    dtype = np.float64           # state (v, u, a_buff) when zeroed between samples
    source_dtype = np.float64    # the spike source RingBuffer

    def lif_kwargs(self, plan, p: Pop) -> dict:
        return dict(du=p.du, dv=p.dv, vth=p.vth, bias_mant=p.bias.copy())

    def dense_kwargs(self, plan, c: Conn) -> dict:
        if c.kind is ConnKind.SPARSE:
            return dict(weights=sparse.csr_matrix(c.weight, dtype=np.float64))
        return dict(weights=np.array(c.weight, dtype=np.float64))

    def conv_kwargs(self, plan, c: Conn) -> dict:
        return dict(weight=lava_kernel(c.weight))

    def dyn_values(self, plan, d: Dyn, value, sample: int) -> list:
        """[(var name, value)] of a per-sample parameter on its process."""
        return [(d.var, value)]

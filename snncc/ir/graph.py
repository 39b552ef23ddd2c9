"""SpikeGraph: a typed directed graph of ops (networkx inside, a small API outside).

Edges run from a producer to an input port of a consumer. An edge with
``delay=d`` (1..MAX_DELAY steps) delivers the producer's value from d steps earlier (zero
before t=0): a delay of 1 is how recurrence is expressed (longer ones are NIR's Delay), and
delayed edges are ignored when ordering nodes, so a recurrent graph still has a well-defined
evaluation order.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import networkx as nx

from snncc.ir import ops as _ops
from snncc.ir.ops import is_synapse
from snncc.ir.types import GraphError, TensorType


MAX_DELAY = 1024  # steps; an edge delays by 0..MAX_DELAY


@dataclass(frozen=True)
class Port:
    src: str
    delay: int = 0


class SpikeGraph:
    def __init__(self, name: str = "snn", metadata: dict | None = None):
        self.name = name
        self.metadata = dict(metadata or {})
        self._g = nx.MultiDiGraph()
        self._inputs: dict[str, list[Port]] = {}
        self._types: dict[str, TensorType] | None = None
        self._order: list[str] | None = None

    # -- construction ---------------------------------------------------
    def add(self, name: str, op, inputs=()) -> str:
        if name in self._g:
            raise GraphError(f"duplicate node name {name!r}")
        if not isinstance(op, _ops.OP_TYPES):
            raise GraphError(f"node {name!r}: {type(op).__name__} is not a spike-graph op")
        ports = [p if isinstance(p, Port) else Port(p) for p in inputs]
        self._g.add_node(name, op=op)
        self._inputs[name] = []
        self._types = self._order = None
        for p in ports:
            self.connect(p.src, name, p.delay)
        return name

    def replace_op(self, name: str, op) -> None:
        """Give node ``name`` a new op, keeping its edges (e.g. fold preprocessing into the Input)."""
        if name not in self._g:
            raise GraphError(f"unknown node {name!r}")
        if not isinstance(op, _ops.OP_TYPES):
            raise GraphError(f"node {name!r}: {type(op).__name__} is not a spike-graph op")
        self._g.nodes[name]["op"] = op
        self._types = self._order = None

    def connect(self, src: str, dst: str, delay: int = 0) -> None:
        """Append an input port to ``dst`` (used for recurrent edges added after both nodes)."""
        for n in (src, dst):
            if n not in self._g:
                raise GraphError(f"edge {src!r} -> {dst!r}: unknown node {n!r}")
        if isinstance(delay, bool) or not isinstance(delay, Integral) or not 0 <= delay <= MAX_DELAY:
            raise GraphError(f"edge {src!r} -> {dst!r}: delay must be an int in 0..{MAX_DELAY} steps, got {delay!r}")
        self._g.add_edge(src, dst, port=len(self._inputs[dst]), delay=int(delay))
        self._inputs[dst].append(Port(src, int(delay)))
        self._types = self._order = None

    # -- queries --------------------------------------------------------
    def __contains__(self, name) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def op(self, name: str):
        return self._g.nodes[name]["op"]

    def inputs(self, name: str) -> list[Port]:
        return list(self._inputs[name])

    def consumers(self, name: str) -> list[str]:
        return sorted({dst for _, dst in self._g.out_edges(name)}, key=self.order().index)

    def order(self) -> list[str]:
        """Evaluation order: topological over non-delayed edges, ties by insertion order (cached)."""
        if self._order is not None:
            return list(self._order)
        dag = nx.DiGraph()
        dag.add_nodes_from(self._g.nodes)
        dag.add_edges_from((u, v) for u, v, d in self._g.edges(data=True) if d["delay"] == 0)
        if not nx.is_directed_acyclic_graph(dag):
            cycle = nx.find_cycle(dag)
            raise GraphError(f"cycle without a delayed edge through {cycle[0][0]!r}")
        index = {n: i for i, n in enumerate(self._g.nodes)}
        self._order = list(nx.lexicographical_topological_sort(dag, key=index.get))
        return list(self._order)

    def components(self) -> list[tuple[list[str], bool]]:
        """Strongly connected components of the graph *with* its delayed edges, in dependency
        order (ties by evaluation order), each as (names in evaluation order, cyclic). A cyclic
        component (a recurrent loop through a delayed edge) must be stepped time-major; every
        other node's T steps depend only on its inputs' T steps."""
        order = self.order()
        index = {n: i for i, n in enumerate(order)}
        full = nx.DiGraph()
        full.add_nodes_from(order)
        full.add_edges_from((p.src, n) for n in order for p in self._inputs[n])
        dag = nx.condensation(full)
        first = {c: min(index[n] for n in dag.nodes[c]["members"]) for c in dag.nodes}
        out = []
        for c in nx.lexicographical_topological_sort(dag, key=first.get):
            names = sorted(dag.nodes[c]["members"], key=index.get)
            out.append((names, len(names) > 1 or full.has_edge(names[0], names[0])))
        return out

    def nodes(self, op_type=None) -> list[str]:
        return [n for n in self.order() if op_type is None or isinstance(self.op(n), op_type)]

    @property
    def input_nodes(self) -> list[str]:
        return [n for n in self.order() if self.op(n).is_input]

    @property
    def output_nodes(self) -> list[str]:
        return [n for n in self.order() if self.op(n).is_readout]

    def readout_op(self):
        """The op of the graph's one Readout node (GraphError if there is not exactly one)."""
        outs = self.output_nodes
        if len(outs) != 1:
            raise GraphError(f"graph must have exactly one Readout node, found {len(outs)}")
        return self.op(outs[0])

    def synapses(self) -> list[str]:
        return [n for n in self.order() if is_synapse(self.op(n))]

    def max_delay(self) -> int:
        """The longest edge delay in steps (0 without delayed edges): how many past steps a run keeps."""
        return max((p.delay for ports in self._inputs.values() for p in ports), default=0)

    def populations(self) -> list[str]:
        return [n for n in self.order() if self.op(n).is_population]

    # -- typing ---------------------------------------------------------
    def infer(self) -> dict[str, TensorType]:
        """Infer every node's output type; raises GraphError naming the offending node."""
        if self._types is not None:
            return self._types
        order = self.order()
        if not self.input_nodes:
            raise GraphError("graph has no Input node")
        if len(self.output_nodes) != 1:
            raise GraphError(f"graph must have exactly one Readout node, found {len(self.output_nodes)}")
        # Pass 1 types each node from the inputs already typed (a delayed edge may come
        # from a later node); pass 2 re-checks every node with all of its inputs.
        for n in order:
            lo, hi = self.op(n).arity
            if len(self._inputs[n]) < lo or (hi is not None and len(self._inputs[n]) > hi):
                raise GraphError(f"node {n!r}: {type(self.op(n)).__name__} takes "
                                 f"{lo}..{hi if hi is not None else 'n'} inputs, got {len(self._inputs[n])}")
        types: dict[str, TensorType] = {}
        for n in order:
            known = [types[p.src] for p in self._inputs[n] if p.src in types]
            if len(known) < len(self._inputs[n]) and not known:
                raise GraphError(f"node {n!r}: only delayed inputs from later nodes; a recurrent edge "
                                 f"must enter a node that also has a same-step input")
            types[n] = self.op(n).infer(n, known)
        for n in order:
            full = self.op(n).infer(n, [types[p.src] for p in self._inputs[n]])
            if full != types[n]:
                raise GraphError(f"node {n!r}: recurrent input changes its type from {types[n]} to {full}")
        self._types = types
        return types

    def type_of(self, name: str) -> TensorType:
        return self.infer()[name]

    def summary(self) -> str:
        types = self.infer()
        lines = [f"graph {self.name!r}: {len(self)} nodes"]
        for n in self.order():
            srcs = ", ".join(p.src + (f"@t-{p.delay}" if p.delay else "") for p in self._inputs[n])
            lines.append(f"  {n:<16} {type(self.op(n)).__name__:<8} ({srcs}) -> {types[n]}")
        return "\n".join(lines)

"""The importer's graph walk: NIR nodes in dependency order, each converted by its rule
(:data:`snncc.nir.importer.RULES`) into snncc ops, with the bookkeeping the rules share:
which snncc node carries a NIR node's value, at which delay, and which edges close cycles."""
from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np

from snncc.ir.graph import Port, SpikeGraph
from snncc.ir.ops import Add, Conv, Dense
from snncc.ir.types import GraphError, TensorType
from snncc.nir.reading import NIRImportError, back_edges


class Builder:
    def __init__(self, nodes, edges, dt, encoding, name, rules):
        self.nodes, self.edges, self.dt, self.encoding, self.rules = nodes, edges, dt, encoding, rules
        self.g = SpikeGraph(name, {"source": "nir", "nir.dt": dt})
        self.alias: dict[str, str] = {}  # NIR node -> snncc node carrying its value
        self.types: dict[str, TensorType] = {}  # snncc node -> type
        self.succ = {n: [d for s, d in edges if s == n] for n in nodes}
        self.pending_late: list = []  # (NIR source, population, delay): cycle edges, connected at the end
        self.delay_of: dict[str, int] = {}  # NIR Delay node -> steps its consumers read its alias late by
        self.back: set = set()

    def fail(self, node, msg):
        raise NIRImportError(f"node {node!r} ({type(self.nodes[node]).__name__}): {msg}")

    def add(self, name, op, ports=()):
        try:
            t = op.infer(name, [self.types[p.src if hasattr(p, "src") else p] for p in ports])
        except GraphError as e:
            raise NIRImportError(str(e)) from None
        self.g.add(name, op, ports)
        self.types[name] = t
        return name

    def build(self) -> SpikeGraph:
        import nir
        inputs = [n for n, m in self.nodes.items() if isinstance(m, nir.Input)]
        outputs = [n for n, m in self.nodes.items() if isinstance(m, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRImportError(f"snncc graphs have one input and one output; the NIR graph has "
                                 f"{len(inputs)} Input and {len(outputs)} Output nodes")
        unreached = set(self.nodes) - set(nx.descendants(nx.DiGraph(self.edges), inputs[0])) - set(inputs) \
            if self.edges else set(self.nodes) - set(inputs)
        if unreached:
            raise NIRImportError(f"node {sorted(unreached)[0]!r}: not reachable from the input {inputs[0]!r}")
        self.back = back_edges(self.nodes, self.edges, inputs)
        dag = nx.DiGraph()
        dag.add_nodes_from(self.nodes)
        dag.add_edges_from(e for e in self.edges if e not in self.back)
        index = {n: i for i, n in enumerate(self.nodes)}
        for n in nx.lexicographical_topological_sort(dag, key=index.get):
            rule = self.rules.get(type(self.nodes[n]).__name__)
            if rule is None:
                self.fail(n, "no snncc equivalent for this NIR node type")
            rule(self, n, self.nodes[n])
        for src, dst, delay in self.pending_late:
            self.g.connect(self.alias[src], dst, delay)
        return self.g

    def ports(self, n):
        """(same-step ports, [(NIR source, delay)] of cycle-closing edges) of node n. A cycle edge
        delivers the previous step's value, later still when its source is a Delay."""
        out = []
        for s, d in self.edges:
            if d == n:
                delayed = (s, d) in self.back
                if not delayed and s not in self.alias:
                    self.fail(n, f"input {s!r} is not available")
                out.append((s, delayed))
        same = [Port(self.alias[s], self.delay_of.get(s, 0)) for s, dl in out if not dl]
        late = [(s, 1 + self.delay_of.get(s, 0)) for s, dl in out if dl]
        return same, late

    def single(self, n):
        """The one same-step snncc source of a non-neuron node (several NIR inputs are summed by an Add)."""
        same, late = self.ports(n)
        if late:
            self.fail(n, "a recurrent cycle must close into a neuron population (LIF, IF, CubaLIF, Threshold)")
        if not same:
            self.fail(n, "has no input")
        if len(same) == 1:
            return same[0]
        return Port(self.add(f"{n}.sum", Add(), same))

    def nir_of(self, snncc_name):
        return next(a for a, b in self.alias.items() if b == snncc_name)

    def owned_synapse(self, n, port):
        """The Dense/Conv behind ``port`` if it feeds node n only (so n's constants may fold into it), else None."""
        op = self.g.op(port.src)
        owners = {a for a in self.nodes if self.alias.get(a) == port.src}
        if port.delay or not isinstance(op, (Dense, Conv)) or not all(set(self.succ[o]) <= owners | {n}
                                                                      for o in owners):
            return None
        return op

    def row_values(self, n, values, op):
        """Per-output-row values of a Dense/Conv (Conv: must be constant over each channel)."""
        if isinstance(op, Dense):
            return np.asarray(values).reshape(-1)
        per_c = np.asarray(values).reshape(values.shape[0], -1)
        if not (per_c == per_c[:, :1]).all():
            self.fail(n, "a per-position value behind a convolution cannot be folded into its per-channel "
                         "weights and bias")
        return per_c[:, 0]

    def fold_rows(self, src, rows, add=None):
        """Replace synapse ``src`` by one whose output rows are scaled by ``rows`` (and ``add`` added to the bias)."""
        op = self.g.op(src)
        w = op.weight * rows.reshape((-1,) + (1,) * (op.weight.ndim - 1))
        b = None if op.bias is None else op.bias * rows
        if add is not None:
            b = (np.zeros(op.weight.shape[0]) if b is None else b) + add
        self.g.replace_op(src, dataclasses.replace(op, weight=w, bias=b))

"""Reading a NIR graph for the importer: the file, nested graphs inlined, pass-through nodes
removed, and the small conversions every node rule uses (arrays, integer pairs, broadcasting)."""
from __future__ import annotations

import os

import numpy as np

from snncc.ir.types import GraphError

PASS = "_pass"  # stands for a nested graph's Input/Output port while the graph is inlined


class NIRImportError(GraphError):
    """The NIR graph cannot be represented exactly; the message names the node and why."""


def arr(x) -> np.ndarray:
    """A NIR parameter as float64 (snnTorch leaves torch tensors in the graph it returns)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def pair(x, node, what) -> tuple:
    """One or two integers (a 2-D kernel's stride, padding, dilation ...) as a pair."""
    a = np.asarray(arr(x)).astype(np.int64).reshape(-1)
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size == 2:
        return (int(a[0]), int(a[1]))
    raise NIRImportError(f"node {node!r}: {what} {a.tolist()} is not one or two integers")


def fit(a, shape) -> np.ndarray:
    """Broadcast a parameter to a population shape; a 1-D convolution's (C, L) values also fit its (C, 1, L)."""
    a = np.asarray(a)
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        if a.size == int(np.prod(shape)) and tuple(d for d in a.shape if d != 1) == tuple(d for d in shape if d != 1):
            return a.reshape(shape)
        raise


def back_edges(nodes, edges, roots) -> set:
    """The edges a depth-first walk from ``roots`` (successors in edge order) finds going back to a
    node on its path: the edges that close NIR's cycles, each delivering the previous step's value."""
    succ = {n: [d for s, d in edges if s == n] for n in nodes}
    back, state = set(), {}
    for root in roots:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            n, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[n] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((n, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return back


def read(path):
    """nir.read with one-line errors, without nir's type check: it rejects grouped convolutions (it takes a
    conv's input channels from weight.shape[1]); snncc infers and checks every shape itself."""
    import nir
    if not os.path.isfile(path):
        raise NIRImportError(f"cannot read NIR file {path}: no such file")
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # noqa: BLE001 -- h5py/nir raise many types on bad files
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NIRImportError(f"{path}: not a readable NIR file ({type(e).__name__}: {text})") from None


def flatten(graph, prefix=""):
    """Inline nested NIRGraphs: returns ({name: node}, [(src, dst)]) with sub-graph Input/Output
    nodes kept as pass-through nodes (:data:`PASS`)."""
    import nir
    nodes, edges, subs = {}, [], {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = flatten(node, full + ".")
            ins = [full + "." + n for n, m in node.nodes.items() if isinstance(m, nir.Input)]
            outs = [full + "." + n for n, m in node.nodes.items() if isinstance(m, nir.Output)]
            for n in ins + outs:
                sub_nodes[n] = PASS
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
            subs[full] = (ins, outs)
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        src, dst = prefix + src, prefix + dst
        srcs = subs[src][1] if src in subs else [src]
        dsts = subs[dst][0] if dst in subs else [dst]
        for s in srcs:
            for d in dsts:
                if s not in nodes or d not in nodes:
                    raise NIRImportError(f"edge {s!r} -> {d!r}: unknown node")
                edges.append((s, d))
    return nodes, edges


def contract(nodes, edges):
    """Remove pass-through nodes (sub-graph ports, nir Identity), joining their edges."""
    passing = [n for n, m in nodes.items() if (isinstance(m, str) and m == PASS) or type(m).__name__ == "Identity"]
    for p in passing:
        ins = [s for s, d in edges if d == p]
        outs = [d for s, d in edges if s == p]
        edges = [(s, d) for s, d in edges if p not in (s, d)] + [(s, d) for s in ins for d in outs]
        del nodes[p]
    return nodes, edges

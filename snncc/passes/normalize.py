"""Canonicalise a freshly exported graph.

``fuse_add_into_neuron``: an Add whose only consumer is a neuron population is
dropped and its inputs wired straight into the population (a neuron integrates
the sum of its inputs anyway). This is how a Spike-ResNet block's synapse
current and identity spikes "converge on one population"; an Add that also
feeds anything else (SEW's spike ADD, MS's membrane shortcut) is kept, so the
validator can name it.
"""
from __future__ import annotations

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add


def fuse_add_into_neuron(graph: SpikeGraph) -> SpikeGraph:
    out = SpikeGraph(graph.name, graph.metadata)
    fused = {}
    for n in graph.order():
        op = graph.op(n)
        consumers = graph.consumers(n)
        if isinstance(op, Add) and len(consumers) == 1 and graph.op(consumers[0]).is_population \
                and all(p.delay == 0 for p in graph.inputs(n)):
            fused[n] = [fused.get(p.src, [p]) for p in graph.inputs(n)]
            fused[n] = [p for group in fused[n] for p in group]
    pending = []
    for n in graph.order():
        if n in fused:
            continue
        ports = []
        for p in graph.inputs(n):
            ports.extend(fused[p.src] if p.src in fused and p.delay == 0 else [p])
        out.add(n, graph.op(n))
        pending.append((n, ports))
    for n, ports in pending:
        for p in ports:
            out.connect(p.src, n, p.delay)
    out.infer()
    return out


PIPELINE = (fuse_add_into_neuron,)


def normalize(graph: SpikeGraph) -> SpikeGraph:
    for stage in PIPELINE:
        graph = stage(graph)
    return graph

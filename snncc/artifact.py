"""`snncc compile --target numba`: an artifact directory like the Lava one, for symmetry.

The numba simulator executes the spike graph directly (its plan is built at load
time and its kernels are cached on disk by numba), so the artifact is the validated
graph plus a description of the plan: graph.snn.onnx, target.json, summary.txt.
"""
from __future__ import annotations

import json

from snncc.ir import serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Neuron, is_synapse


def compile_artifact(graph: SpikeGraph, out_dir) -> None:
    from snncc.fileio import atomic_dir
    types = graph.infer()
    layers = [{"node": n, "op": type(graph.op(n)).__name__, "kind": types[n].kind.value,
               "shape": list(types[n].shape)} for n in graph.order()]
    target = {"format": "snncc-numba/1", "target": "numba", "event_driven_synapses":
              [n for n in graph.order() if is_synapse(graph.op(n))
               and types[graph.inputs(n)[0].src].kind.value != "analog"],
              "populations": graph.nodes(Neuron), "layers": layers}
    with atomic_dir(out_dir, kind="numba") as tmp:
        serialize.save(graph, tmp / "graph.snn.onnx")
        (tmp / "target.json").write_text(json.dumps(target, indent=1) + "\n")
        (tmp / "summary.txt").write_text(graph.summary() + "\n")

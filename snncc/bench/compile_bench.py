"""Compile-time benchmark of the Lava lowering on a ResNet-18-sized fully spiking graph.

The graph is built directly with the IR API (Spike-ResNet style, CIFAR-sized, random
weights), so the benchmark does not depend on training code or an exporter:

    x: Input 3x32x32 (direct) -> stem conv 3x3, 64 -> LIF
    4 stages x 2 basic blocks, channels 64, 128, 256, 512, stride 2 at stages 2-4:
        conv1 3x3 (stride s) -> LIF a -> conv2 3x3 -> LIF out
        out also integrates the shortcut: the block input's spikes (identity spike path)
        or, when the shape changes, a 1x1 stride-s downsample conv's current
    avgpool 4x4 -> flatten -> FC 10 -> LIF -> count readout

About 11.2 M weights and 0.5 M neurons. Timed: building the graph (not part of compilation),
``snncc.backends.lava.lower`` (float, and optionally fixed point), ``compile_graph`` into a temporary
directory (lowering + ONNX + lava.json + summary). No Lava process is built and no runtime
started. Run ``python -m snncc.bench.compile_bench``.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter

import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.neuron import NeuronParams

TARGET_S = 10.0
PARAMS = NeuronParams("lif", tau=2.0, v_th=1.0)
STAGES = (64, 128, 256, 512)


def _conv(rng, c_out, c_in, k, stride, pad, bias=False):
    fan_in = c_in * k * k
    w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (c_out, c_in, k, k)).astype(np.float32)
    b = rng.normal(0.0, 0.01, c_out).astype(np.float32) if bias else None
    return Conv(w, b, (stride, stride), (pad, pad))


def build_spike_resnet18(width: float = 1.0, num_classes: int = 10, input_size: int = 32,
                         seed: int = 0) -> SpikeGraph:
    """The ResNet-18-sized fully spiking graph above; ``width`` scales every channel count."""
    rng = np.random.default_rng(seed)
    ch = [max(1, int(round(c * width))) for c in STAGES]
    g = SpikeGraph("spike-resnet18", {"timesteps": 4, "width": width})
    g.add("x", Input((3, input_size, input_size)))
    g.add("stem", _conv(rng, ch[0], 3, 3, 1, 1, bias=True), ["x"])
    src, c_in = g.add("stem.sn", Neuron(PARAMS), ["stem"]), ch[0]
    hw = input_size
    for si, c in enumerate(ch):
        for bi in range(2):
            stride = 2 if (si > 0 and bi == 0) else 1
            hw = (hw + 2 - 3) // stride + 1
            p = f"l{si + 1}.{bi}"
            g.add(f"{p}.conv1", _conv(rng, c, c_in, 3, stride, 1), [src])
            g.add(f"{p}.sn1", Neuron(PARAMS), [f"{p}.conv1"])
            g.add(f"{p}.conv2", _conv(rng, c, c, 3, 1, 1), [f"{p}.sn1"])
            if stride != 1 or c_in != c:
                g.add(f"{p}.down", _conv(rng, c, c_in, 1, stride, 0), [src])
                shortcut = f"{p}.down"
            else:
                shortcut = src          # identity spike path into the output population
            src, c_in = g.add(f"{p}.sn2", Neuron(PARAMS), [f"{p}.conv2", shortcut]), c
    g.add("pool", Pool("avg", (hw, hw), (hw, hw)), [src])
    g.add("flat", Flatten(), ["pool"])
    w = rng.normal(0.0, np.sqrt(2.0 / c_in), (num_classes, c_in)).astype(np.float32)
    g.add("fc", Dense(w, np.zeros(num_classes, np.float32)), ["flat"])
    g.add("fc.sn", Neuron(PARAMS), ["fc"])
    g.add("out", Readout("count"), ["fc.sn"])
    return g


def bench_compile(width: float = 1.0, seed: int = 0, fixed_point: bool = False,
                  with_artifact: bool = True, out_dir=None) -> dict:
    """Time lowering (and compile_graph) of the Spike-ResNet-18 graph. Returns a dict of
    seconds and plan statistics; ``within_target`` compares float ``lower_s`` with 10 s."""
    from snncc.backends import lava as lb
    t0 = time.perf_counter()
    g = build_spike_resnet18(width=width, seed=seed)
    g.infer()
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = lb.lower(g)
    lower_s = time.perf_counter() - t0

    res = {
        "graph": g.name, "width": width,
        "weights": int(sum(np.size(g.op(n).weight) for n in g.synapses())),
        "neurons": int(sum(g.type_of(n).size for n in g.populations())),
        "graph_nodes": len(g),
        "build_graph_s": build_s,
        "lower_s": lower_s,
        "lava_processes": dict(Counter(str(c.kind) for c in plan.conns)) | {"LIF": len(plan.pops)},
        "conv_synapses_as_lava_conv": sum(1 for c in plan.conns if c.kind == "conv"),
        "conv_synapses": sum(1 for n in g.synapses() if isinstance(g.op(n), Conv)),
        "max_depth": plan.max_depth,
        "largest_dense_entries": int(max([c.weight.size for c in plan.conns if c.kind == "dense"] + [0])),
    }
    if fixed_point:
        t0 = time.perf_counter()
        fplan = lb.lower(g, lb.Options(fixed_point=True))
        res["lower_fixed_s"] = time.perf_counter() - t0
        res["fixed_conv_weight_exp"] = sorted({q.weight_exp for q in fplan.fixed.conns.values() if q.kind == "conv"})
    if with_artifact:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            t0 = time.perf_counter()
            out = lb.compile_graph(g, os.path.join(tmp, "art"))
            res["compile_graph_s"] = time.perf_counter() - t0
            res["artifact_bytes"] = int(sum(f.stat().st_size for f in out.iterdir()))
    res["target_s"] = TARGET_S
    res["within_target"] = bool(lower_s <= TARGET_S and res.get("compile_graph_s", 0.0) <= TARGET_S)
    res["load_average_1min"] = os.getloadavg()[0]
    return res


if __name__ == "__main__":
    for k, v in bench_compile(fixed_point=True).items():
        print(f"{k:>28}: {v}")

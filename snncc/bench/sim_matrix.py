"""`snncc bench sim --matrix`: the simulator against a dense float32 torch evaluation on the workloads users run.

Cells: model (the 784-1024-1024-10 LIF MLP of :mod:`snncc.bench.sim_bench`; Spike-ResNet-18, small stem,
3x32x32, width 1/2 and 1) x input encoding (direct: an analog sample presented at every step; spike: a
Bernoulli train at the target rate) x firing rate (every population calibrated to it by scaling its
synapses' weights, :func:`calibrate`) x T x batch. In each cell, one process, same threads:

* ``numba``: the simulator's :class:`~snncc.sims.numba_sim.Plan` (built once per graph, reused, as
  ``snncc run`` reuses it across batches);
* ``dense``: :class:`~snncc.backends.dense_torch.DenseTorch` (the `dense` backend), float32 multi-step (spikingjelly's way);
* ``per_step`` (batch 1 only): the same graph stepped one step at a time (the single-case baseline);
* ``lava`` (MLP, batch 1, with ``lava=True``): the graph lowered by :mod:`snncc.backends.lava` (float).

Each side runs once recorded (warm-up; JIT and buffers), its spike trains compared with numba's by
:func:`snncc.agreement.compare_runs` (exactly, entry by entry; where any side differs, the float64 torch
reference is run too and says which is right), then ``repeats`` timed runs interleaved side by side (the
order alternating), so load from other processes hits both sides alike; the minimum is the figure, the
median is reported for the noise. numba and the dense baseline are each timed with their threads and with
one thread; each side's figure is the better of the two.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import statistics
import time

import numpy as np
import torch

from snncc.agreement import compare_runs
from snncc.backends.dense_torch import DenseTorch
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Dense, Input, Neuron
from snncc.ir.types import Kind
from snncc.sims import numba_sim

MODELS = ("mlp", "resnet18-0.5", "resnet18-1")
FULL = {"models": MODELS, "batches": (1, 16, 256), "timesteps": (4, 8, 200), "inputs": ("direct", "spike"),
        "rates": (0.02, 0.10, 0.25)}
# what fits a few minutes on the shared 2-core machine: the user workloads and the sparse corner
QUICK = {"models": ("mlp", "resnet18-0.5"), "batches": (1, 16), "timesteps": (4, 8), "inputs": ("direct", "spike"),
         "rates": (0.02, 0.10, 0.25)}
CALIBRATION_BATCH = 4


def base_graph(model: str, encoding: str, seed: int = 0) -> SpikeGraph:
    """The model's graph (untrained weights) with the input encoding asked for."""
    if model == "mlp":
        from snncc.bench.sim_bench import build_mlp
        graph, _ = build_mlp(np.random.default_rng(seed))
    elif model.startswith("resnet18-"):
        from snncc.export import export
        from snncc.models.resnet import build_resnet
        torch.manual_seed(seed)
        net = build_resnet("spike-resnet18", 10, stem="small", width=float(model.split("-")[1]), input_size=(32, 32))
        graph = export(net, torch.zeros(4, 1, 3, 32, 32), name=model)
    else:
        raise ValueError(f"unknown bench model {model!r} (choose from {', '.join(MODELS)})")
    (inp,) = graph.input_nodes
    graph.replace_op(inp, Input(graph.op(inp).shape, encoding=encoding))
    return graph


def sample(graph: SpikeGraph, batch: int, timesteps: int, rate: float, rng) -> np.ndarray:
    """Direct: uniform [0, 1) samples (pixels); spike: Bernoulli(rate) trains (B, T, *shape)."""
    (inp,) = graph.input_nodes
    op = graph.op(inp)
    if op.direct:
        return rng.random((batch, *op.shape))
    return (rng.random((batch, timesteps, *op.shape)) < rate).astype(np.float64)


def calibrate(graph: SpikeGraph, x: np.ndarray, timesteps: int, rate: float) -> SpikeGraph:
    """A copy of ``graph`` whose populations fire at about ``rate`` on ``x``: layer by layer, in order, the
    synapses feeding a population (not yet scaled) get the common factor (bisection on a log scale) at
    which the population's rate is closest to ``rate``; weights stay float32 values."""
    ev = DenseTorch(graph)
    scale: dict = {}

    def hook(name, ins):
        ports = graph.inputs(name)
        free = [i for i, p in enumerate(ports) if isinstance(graph.op(p.src), (Dense, Conv)) and p.src not in scale]
        fixed = sum((ins[i] for i in range(len(ins)) if i not in free), torch.zeros(()))
        scaled = sum((ins[i] for i in free), torch.zeros(()))
        steps = max(v.shape[0] for v in ins)
        lo, hi = -12.0, 12.0
        for _ in range(18):
            mid = (lo + hi) / 2
            spikes = DenseTorch.fire(graph.op(name), scaled * 2.0 ** mid + fixed, steps, {}, name)
            lo, hi = (mid, hi) if float(spikes.mean()) < rate else (lo, mid)
        for i in free:
            scale[ports[i].src] = 2.0 ** hi
        return scaled * 2.0 ** hi + fixed

    with torch.no_grad():
        ev.forward(ev.prepare(x, timesteps), timesteps, {}, hook)
    out = copy.deepcopy(graph)
    for n, s in scale.items():
        op = graph.op(n)
        f32 = lambda a: None if a is None else (np.asarray(a) * s).astype(np.float32).astype(np.float64)  # noqa: E731
        out.replace_op(n, dataclasses.replace(op, weight=f32(op.weight), bias=f32(op.bias)))
    return out


def synaptic_events(graph: SpikeGraph, activity: dict) -> dict:
    """Events delivered by spike/count sources: {'dense': n, 'conv': n} (a conv event: kh*kw*C_out adds)."""
    types = graph.infer()
    out = {"dense": 0.0, "conv": 0.0}
    for n in graph.synapses():
        op, src = graph.op(n), graph.inputs(n)[0].src
        if types[src].kind is Kind.ANALOG:
            continue
        if isinstance(op, Dense):
            out["dense"] += activity[src] * op.weight.shape[0]
        elif isinstance(op, Conv):
            out["conv"] += activity[src] * op.weight.shape[0] * op.weight.shape[2] * op.weight.shape[3]
    return out


def _interleaved(fns: dict, repeats: int) -> dict:
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def _single_threaded(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def _lava_side(graph):
    from snncc.runtime import get_backend, lower
    be = get_backend("lava")
    prog = lower(graph, be, be.Options())
    return lambda x, t, record=False: be.run(prog, x, t, record=record)


def _agreement(graph, a, b, names) -> dict:
    res = compare_runs(graph, a, b, names=names)
    return {"spikes_equal": res.spikes_equal, "differing_spike_entries": int(sum(res.differing.values())),
            "compared_spike_entries": int(sum(res.compared.values()))}


def time_cell(graph: SpikeGraph, plans: tuple, dense: DenseTorch, x: np.ndarray, timesteps: int, repeats: int,
              lava=None) -> dict:
    """One cell: agreement from the recorded warm-up runs, then interleaved timings (seconds per run).
    ``plans``: the numba Plan with its default threads and one with a single thread."""
    sides = {"numba": plans[0].run, "dense": dense.run}
    if len(x) == 1:
        sides["per_step"] = DenseTorch(graph, per_step=True).run
    if lava is not None and len(x) == 1:
        sides["lava"] = lava
    runs, first_s = {}, {}
    plans[0].float32_stats(reset=True)
    for k, fn in sides.items():
        t0 = time.perf_counter()
        runs[k] = fn(x, timesteps, record=True)
        first_s[k] = time.perf_counter() - t0
    agreement = {k: _agreement(graph, runs["numba"], runs[k], ("numba", k)) for k in sides if k != "numba"}
    if not all(a["spikes_equal"] for a in agreement.values()):  # who is right? the float64 reference decides
        from snncc.backends import torch_ref
        ref = torch_ref.run(graph, x, timesteps, record=True)
        agreement["reference"] = _agreement(graph, ref, runs["numba"], ("reference", "numba"))
        for k in sides:
            if k != "numba":
                agreement[k]["vs_reference"] = _agreement(graph, ref, runs[k], ("reference", k))
    # On the shared machine a thread that loses its core stalls a whole parallel section (torch's OpenMP
    # elementwise ops ran ~50x slower under load): each side is also timed single-threaded and its
    # better figure is used, so neither side's ratio is set by the scheduler.
    fns = {k: (lambda fn=fn: fn(x, timesteps)) for k, fn in sides.items() if k != "lava"}
    fns["numba_1thread"] = lambda: plans[1].run(x, timesteps)
    fns["dense_1thread"] = lambda: _single_threaded(dense.run, x, timesteps)
    timed = _interleaved(fns, repeats)
    numba_s = min(timed["numba"][0], timed["numba_1thread"][0])
    dense_s = min(timed["dense"][0], timed["dense_1thread"][0])
    pops = graph.populations()
    neurons = sum(graph.type_of(p).size for p in pops)
    events = synaptic_events(graph, runs["numba"].activity)
    cell = {"firing_rate": sum(runs["numba"].activity[p] for p in pops) / (neurons * len(x) * timesteps),
            "seconds": {k: {"min": v[0], "median": v[1]} for k, v in timed.items()},
            "ms_per_sample": {k: v[0] * 1e3 / len(x) for k, v in timed.items()},
            "numba_vs_dense": dense_s / numba_s,
            "agreement": agreement,
            "float32_neurons": plans[0].float32_stats(),  # checked / recomputed exactly (one recorded run)
            "conv_events_per_s": events["conv"] / timed["numba"][0],  # on numba's threads (2 on cpu2)
            "dense_events_per_s": events["dense"] / timed["numba"][0],
            "load_average_1min": os.getloadavg()[0]}
    if "per_step" in timed:
        cell["numba_vs_per_step"] = timed["per_step"][0] / numba_s
    if "lava" in sides:  # one recorded run: process start and compile included
        cell["lava_wall_s_with_startup"] = first_s["lava"]
    return cell


def format_cell(c: dict) -> str:
    agree = all(a["spikes_equal"] for k, a in c["agreement"].items() if k != "reference")
    verdict = "equal" if agree else ("DIFFER (numba == reference)" if c["agreement"]["reference"]["spikes_equal"]
                                     else "DIFFER (numba != reference)")
    ms = "  ".join(f"{k} {v:.3f}" for k, v in c["ms_per_sample"].items())
    return (f"{c['model']:<13} {c['input']:<6} rate {c['target_rate']:.2f} (got {c['firing_rate']:.3f}) "
            f"T {c['timesteps']:<3} B {c['batch']:<3}  ms/sample: {ms}  numba/dense {c['numba_vs_dense']:.2f}x  "
            f"spikes {verdict}")


def run_matrix(models=QUICK["models"], batches=QUICK["batches"], timesteps=QUICK["timesteps"],
               inputs=QUICK["inputs"], rates=QUICK["rates"], repeats: int = 5, seed: int = 0,
               lava: bool = False, progress=None) -> dict:
    """Every selected cell; graphs are calibrated once per (model, input, rate) at T = 8."""
    rng = np.random.default_rng(seed)
    cells = []
    for model, encoding, rate in itertools.product(models, inputs, rates):
        base = base_graph(model, encoding, seed)
        graph = calibrate(base, sample(base, CALIBRATION_BATCH, 8, rate, rng), 8, rate)
        plans, dense = (numba_sim.Plan(graph), numba_sim.Plan(graph, threads=1)), DenseTorch(graph)
        lava_fn = _lava_side(graph) if lava and model == "mlp" else None
        for t, b in itertools.product(timesteps, batches):
            cell = {"model": model, "input": encoding, "target_rate": rate, "timesteps": t, "batch": b}
            cell |= time_cell(graph, plans, dense, sample(graph, b, t, rate, rng), t, repeats, lava_fn)
            cells.append(cell)
            if progress:
                progress(cell)
    ratios = [c["numba_vs_dense"] for c in cells]
    return {"cells": cells, "repeats": repeats, "numba_threads": numba_sim.default_threads(),
            "torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "min_numba_vs_dense": min(ratios) if ratios else None}

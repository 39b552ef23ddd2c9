"""Host-side pieces shared by the Lava run (:mod:`.execute`) and the integer reference
(:mod:`.integer`): the per-sample direct-input currents and the readout replay, both
computed with the torch reference's own op rules (:func:`snncc.backends.torch_ref.apply`)."""
from __future__ import annotations

import numpy as np
import torch

from snncc.backends.lava.plan import Dyn, DynVar, LavaPlan, PopRole
from snncc.backends.torch_ref import History, apply
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import ReadoutMode

__all__ = ["host_inputs", "static_values", "dyn_value", "replay", "realign"]


def host_inputs(graph: SpikeGraph, plan: LavaPlan, x: np.ndarray) -> tuple[bool, dict]:
    """(direct, static values) of a checked batch: whether ``x`` is a direct-encoded input (B, *shape)
    rather than a spike train (B, T, *shape), and then the per-sample values of the static nodes."""
    (inp,) = graph.input_nodes
    direct = x.ndim == 1 + len(graph.type_of(inp).shape)
    return direct, (static_values(graph, plan, x) if direct else {})


def static_values(graph: SpikeGraph, plan: LavaPlan, x: np.ndarray) -> dict:
    """Per-sample values of the static (direct-input) nodes, with the reference's own rules."""
    vals = {}
    with torch.no_grad():
        for n in plan.static:
            op = graph.op(n)
            if op.is_input:
                vals[n] = torch.as_tensor(x, dtype=torch.float64)
            else:
                vals[n] = apply(op, [vals[p.src] for p in graph.inputs(n)])
    return {n: v.reshape(v.shape[0], -1).numpy() for n, v in vals.items()}


def dyn_value(d: Dyn, static: dict, b: int) -> np.ndarray:
    v = d.const.copy()
    for node, scale in d.terms:
        term = static[node][b] * scale
        v = v + (term[:, None] if d.var is DynVar.WEIGHTS else term)
    return v


def realign(plan: LavaPlan, raw: dict, graph: SpikeGraph, timesteps: int, batch: int, steps: int) -> dict:
    """Recorded columns (name -> (n, B*steps) or (B, n, steps)) -> reference-aligned spike
    trains of the graph's populations (T, B, *shape): column d .. d + T - 1 of each sample."""
    types = graph.infer()
    trains = {}
    for name, data in raw.items():
        p = plan.pops[name]
        if p.node is None or p.role is not PopRole.NEURON:
            continue
        if data.ndim == 2:
            data = np.stack([data[:, b * steps: (b + 1) * steps] for b in range(batch)])
        cols = data[:, :, p.depth: p.depth + timesteps]           # (B, n, T)
        trains[p.node] = (cols.transpose(2, 0, 1) > 0).astype(np.uint8).reshape(
            timesteps, batch, *types[p.node].shape)
    return trains


def replay(graph: SpikeGraph, x: np.ndarray, trains: dict, timesteps: int, direct: bool):
    """Activity of every node and the readout, from the recorded trains (reference rules)."""
    types = graph.infer()
    order = graph.order()
    batch = x.shape[0]
    xt = torch.as_tensor(x, dtype=torch.float64)
    activity = {n: 0.0 for n in order}
    history, readout = History(graph, types, batch), None
    (out,) = graph.output_nodes
    with torch.no_grad():
        for t in range(timesteps):
            cur = {}
            for n in order:
                op = graph.op(n)
                if op.is_input:
                    cur[n] = xt if direct else xt[:, t]
                elif op.is_population:
                    cur[n] = torch.as_tensor(trains[n][t], dtype=torch.float64)
                else:
                    cur[n] = apply(op, history.inputs(n, cur))
                activity[n] += float(cur[n].sum())
            history.push(cur)
            readout = cur[out] if readout is None else readout + cur[out]
    output = readout.numpy()
    if graph.op(out).mode is ReadoutMode.MEAN:
        output = output / timesteps
    return activity, output

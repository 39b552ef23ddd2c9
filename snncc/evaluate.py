"""Run a spike graph over a labelled dataset with one backend and collect statistics."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from snncc.ir.graph import SpikeGraph
from snncc.backends.base import Program
from snncc.runtime import InputError, RunResult, check_input, get_backend, lower


def default_timesteps(graph: SpikeGraph, timesteps: int | None) -> int:
    t = timesteps if timesteps is not None else graph.metadata.get("timesteps")
    if t is None:
        raise InputError("the graph records no timestep count: pass --timesteps")
    return int(t)


def evaluate(graph, backend, x: np.ndarray, y: np.ndarray, timesteps: int,
             batch_size: int = 256, progress: bool = False, options=None) -> dict:
    """Accuracy and per-node activity summed over the whole set (spike counts for populations).
    ``graph``: a SpikeGraph, lowered here for ``backend`` (a name or Backend) with ``options``
    (the backend's Options dataclass), or an already lowered Program."""
    if len(x) == 0:
        raise InputError("no samples to evaluate")
    be = get_backend(backend)
    program = graph if isinstance(graph, Program) else lower(graph, be, options)
    graph: SpikeGraph = program.graph
    check_input(graph, x[:1], timesteps)  # fail on a shape mismatch before any progress output
    correct = 0
    activity: dict = {}
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=f"run[{backend}]", disable=not progress, leave=False):
        res: RunResult = be.run(program, x[i:i + batch_size], timesteps)
        correct += int((res.predictions() == y[i:i + batch_size]).sum())
        for n, v in res.activity.items():
            activity[n] = activity.get(n, 0.0) + v
    total = RunResult(output=np.zeros((0,)), timesteps=timesteps, batch=len(x), activity=activity)
    return {"backend": be.name, "accuracy": correct / len(x), "samples": int(len(x)),
            "timesteps": int(timesteps), "layers": total.layer_stats(graph), "activity": activity} | \
        be.describe(program.options)

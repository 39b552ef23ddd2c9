"""Run a spike graph over a labelled dataset with one backend and collect statistics."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from snncc.ir.graph import SpikeGraph
from snncc.ir.schema import MAX_TIMESTEPS
from snncc.runtime import InputError, RunResult, check_input, get_backend


def default_timesteps(graph: SpikeGraph, timesteps: int | None) -> int:
    t = timesteps if timesteps is not None else graph.metadata.get("timesteps")
    if t is None:
        raise InputError("the graph records no timestep count: pass --timesteps")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= MAX_TIMESTEPS:
        raise InputError(f"timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {t!r}")
    return int(t)


def evaluate(graph: SpikeGraph, backend: str, x: np.ndarray, y: np.ndarray, timesteps: int,
             batch_size: int = 256, progress: bool = False, options: dict | None = None) -> dict:
    """Accuracy and per-node activity summed over the whole set (spike counts for populations).
    ``options`` are passed to the backend's run (e.g. fixed_point=True for Lava)."""
    if len(x) == 0:
        raise InputError("no samples to evaluate")
    mod = get_backend(backend)
    check_input(graph, x[:1], timesteps)  # fail on a shape mismatch before any progress output
    correct = 0
    activity: dict = {}
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=f"run[{backend}]", disable=not progress, leave=False):
        res: RunResult = mod.run(graph, x[i:i + batch_size], timesteps, **(options or {}))
        correct += int((res.predictions() == y[i:i + batch_size]).sum())
        for n, v in res.activity.items():
            activity[n] = activity.get(n, 0.0) + v
    total = RunResult(output=np.zeros((0,)), timesteps=timesteps, batch=len(x), activity=activity)
    return {"backend": backend, "accuracy": correct / len(x), "samples": int(len(x)),
            "timesteps": int(timesteps), "layers": total.layer_stats(graph), "activity": activity}

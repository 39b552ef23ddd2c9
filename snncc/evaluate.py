"""Run a spike graph over a labelled dataset with one backend (or two, compared) and collect statistics."""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from snncc.agreement import Agreement, compare_runs
from snncc.ir.graph import SpikeGraph
from snncc.runtime import InputError, RunResult, check_input, get_backend


def default_timesteps(graph: SpikeGraph, timesteps: int | None) -> int:
    t = timesteps if timesteps is not None else graph.metadata.get("timesteps")
    if t is None:
        raise InputError("the graph records no timestep count: pass --timesteps")
    return int(t)


class _Tally:
    """Accuracy, activity and wall time of one backend, accumulated batch by batch."""

    def __init__(self, backend: str):
        self.backend, self.correct, self.activity, self.seconds = backend, 0, {}, 0.0

    def add(self, res: RunResult, y: np.ndarray, seconds: float) -> None:
        self.correct += int((res.predictions() == y).sum())
        self.seconds += seconds
        for n, v in res.activity.items():
            self.activity[n] = self.activity.get(n, 0.0) + v

    def result(self, graph: SpikeGraph, samples: int, timesteps: int) -> dict:
        total = RunResult(output=np.zeros((0,)), timesteps=timesteps, batch=samples, activity=self.activity)
        return {"backend": self.backend, "accuracy": self.correct / samples, "samples": int(samples),
                "timesteps": int(timesteps), "layers": total.layer_stats(graph), "activity": self.activity,
                "seconds": self.seconds}


def _timed_run(mod, graph, x, timesteps, options, record):
    t = time.perf_counter()
    res = mod.run(graph, x, timesteps, **(options or {}), **({"record": True} if record else {}))
    return res, time.perf_counter() - t


def evaluate(graph: SpikeGraph, backend: str, x: np.ndarray, y: np.ndarray, timesteps: int,
             batch_size: int = 256, progress: bool = False, options: dict | None = None) -> dict:
    """Accuracy and per-node activity summed over the whole set (spike counts for populations).
    ``options`` are passed to the backend's run (e.g. fixed_point=True for Lava)."""
    return evaluate_agreement(graph, (backend,), x, y, timesteps, batch_size, progress,
                              {backend: options or {}})[0][backend]


def evaluate_agreement(graph: SpikeGraph, backends, x: np.ndarray, y: np.ndarray, timesteps: int,
                       batch_size: int = 256, progress: bool = False, options: dict | None = None):
    """Run each of ``backends`` (one, or two to compare) over the set, batch by batch.

    Returns ({backend: evaluate() result}, Agreement or None). With two backends each batch is run on
    both with recorded spike trains and compared by :func:`snncc.agreement.compare_runs` (spikes exactly,
    per population, step, sample and neuron; analog values within its stated tolerance)."""
    backends = tuple(backends)
    if len(x) == 0:
        raise InputError("no samples to evaluate")
    if len(backends) not in (1, 2) or len(set(backends)) != len(backends):
        raise InputError(f"compare one backend with another, not {list(backends)}")
    mods = {b: get_backend(b) for b in backends}
    check_input(graph, x[:1], timesteps)  # fail on a shape mismatch before any progress output
    tallies = {b: _Tally(b) for b in backends}
    agreement: Agreement | None = None
    record = len(backends) == 2
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=f"run[{','.join(backends)}]", disable=not progress, leave=False):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        runs = {}
        for b in backends:
            runs[b], seconds = _timed_run(mods[b], graph, xb, timesteps, (options or {}).get(b), record)
            tallies[b].add(runs[b], yb, seconds)
        if record:
            part = compare_runs(graph, runs[backends[0]], runs[backends[1]], names=backends, sample_offset=i)
            agreement = part if agreement is None else agreement.merge(part)
    return {b: t.result(graph, len(x), timesteps) for b, t in tallies.items()}, agreement

"""Run a spike graph over a labelled dataset with one backend (or two, compared) and collect statistics."""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from snncc.agreement import Agreement, compare_runs
from snncc.backends.base import Program
from snncc.ir.graph import SpikeGraph
from snncc.ir.schema import MAX_TIMESTEPS
from snncc.runtime import InputError, RunResult, check_input, get_backend, lower


def default_timesteps(graph: SpikeGraph, timesteps: int | None) -> int:
    t = timesteps if timesteps is not None else graph.metadata.get("timesteps")
    if t is None:
        raise InputError("the graph records no timestep count: pass --timesteps")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= MAX_TIMESTEPS:
        raise InputError(f"timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {t!r}")
    return int(t)


class _Tally:
    """Accuracy, activity and wall time of one program, accumulated batch by batch."""

    def __init__(self, backend, program: Program):
        self.backend, self.program = backend, program
        self.correct, self.activity, self.seconds = 0, {}, 0.0

    def run(self, x, y, timesteps: int, record: bool) -> RunResult:
        t = time.perf_counter()
        res = self.backend.run(self.program, x, timesteps, record=record)
        self.seconds += time.perf_counter() - t
        self.correct += int((res.predictions(self.program.graph) == y).sum())
        for n, v in res.activity.items():
            self.activity[n] = self.activity.get(n, 0.0) + v
        return res

    def result(self, samples: int, timesteps: int) -> dict:
        graph = self.program.graph
        total = RunResult(output=np.zeros((0,)), timesteps=timesteps, batch=samples, activity=self.activity)
        return {"backend": self.backend.name, "accuracy": self.correct / samples, "samples": int(samples),
                "timesteps": int(timesteps), "layers": total.layer_stats(graph), "activity": self.activity,
                "seconds": self.seconds} | self.backend.describe(self.program.options)


def evaluate_programs(programs, x: np.ndarray, y: np.ndarray, timesteps: int, batch_size: int = 256,
                      progress: bool = False):
    """Run one lowered :class:`Program`, or two to compare, over a labelled set, batch by batch.

    Returns ([evaluate() result per program], Agreement or None). With two programs each batch is run on
    both with recorded spike trains and compared by :func:`snncc.agreement.compare_runs` (spikes exactly,
    per population, step, sample and neuron; analog values within its stated tolerance)."""
    programs = list(programs)
    if len(x) == 0:
        raise InputError("no samples to evaluate")
    if len(programs) not in (1, 2):
        raise InputError(f"evaluate one program, or two to compare, not {len(programs)}")
    names = tuple(p.backend for p in programs)
    if len(set(names)) != len(names):
        raise InputError(f"compare one backend with another, not {names[0]} with itself")
    graph = programs[0].graph
    check_input(graph, x[:1], timesteps)  # fail on a shape mismatch before any progress output
    tallies = [_Tally(get_backend(p.backend), p) for p in programs]
    record = len(programs) == 2
    agreement: Agreement | None = None
    # the bar counts samples, so its rate is samples/s; it stays (stderr) with the final throughput
    with tqdm(total=len(x), desc=f"run[{','.join(names)}]", unit="sample", disable=not progress) as bar:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            runs = [t.run(xb, yb, timesteps, record) for t in tallies]
            if record:
                part = compare_runs(graph, runs[0], runs[1], names=names, sample_offset=i)
                agreement = part if agreement is None else agreement.merge(part)
            bar.update(len(xb))
    return [t.result(len(x), timesteps) for t in tallies], agreement


def _lowered(graph, backend, options) -> Program:
    return graph if isinstance(graph, Program) else lower(graph, get_backend(backend), options)


def evaluate(graph, backend, x: np.ndarray, y: np.ndarray, timesteps: int,
             batch_size: int = 256, progress: bool = False, options=None) -> dict:
    """Accuracy and per-node activity summed over the whole set (spike counts for populations).
    ``graph``: a SpikeGraph, lowered here for ``backend`` (a name or Backend) with ``options``
    (the backend's Options dataclass), or an already lowered Program."""
    return evaluate_programs([_lowered(graph, backend, options)], x, y, timesteps, batch_size, progress)[0][0]


def evaluate_agreement(graph: SpikeGraph, backends, x: np.ndarray, y: np.ndarray, timesteps: int,
                       batch_size: int = 256, progress: bool = False, options: dict | None = None):
    """``graph`` on two backends (names), compared batch by batch: ({backend: result}, Agreement).
    ``options``: {backend name: Options} where not the default."""
    backends = tuple(backends)
    if len(backends) != 2:
        raise InputError(f"compare two backends, not {list(backends)}")
    programs = [_lowered(graph, b, (options or {}).get(b)) for b in backends]
    results, agreement = evaluate_programs(programs, x, y, timesteps, batch_size, progress)
    return {r["backend"]: r for r in results}, agreement

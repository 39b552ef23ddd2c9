"""What every execution backend takes and returns, and the backend registry.

A backend is a module with ``run(graph, x, timesteps, record=False) -> RunResult``.
The CLI is the only place that picks one by name; optional backends import lazily.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.schema import MAX_TIMESTEPS
from snncc.ir.ops import Neuron
from snncc.ir.types import Kind

BACKENDS = {
    "torch": "snncc.backends.torch_backend",
    "numba": "snncc.sims.numba_sim",
    "lava": "snncc.backends.lava_backend",
}


class InputError(ValueError):
    """Input data that does not fit the graph."""


@dataclass
class RunResult:
    """output: (B, *out_shape) readout values. activity[node]: sum over batch and time of
    the node's output values (spike count for populations). trains[pop]: (T, B, *shape)
    uint8 spike trains, only when recorded."""

    output: np.ndarray
    timesteps: int
    batch: int
    activity: dict = field(default_factory=dict)
    trains: dict = field(default_factory=dict)

    def predictions(self) -> np.ndarray:
        return self.output.reshape(self.batch, -1).argmax(axis=1)

    def layer_stats(self, graph: SpikeGraph) -> list[dict]:
        types = graph.infer()
        return [{"name": n, "neurons": types[n].size, "spikes": int(round(self.activity[n]))}
                for n in graph.nodes(Neuron)]


def get_backend(name: str):
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[name])


def available_memory() -> int:
    """Bytes the system can still give us (MemAvailable), or a large number where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def check_memory(graph: SpikeGraph, timesteps: int) -> None:
    """Refuse up front a run whose per-sample buffers cannot fit: every backend keeps at least one
    float64 value per node element per step for one sample (the numba simulator's chunk floor)."""
    need = 8 * (timesteps + 1) * sum(t.size for t in graph.infer().values())
    have = available_memory()
    if need > have:
        raise InputError(f"a run of {timesteps} steps needs {need / 2**30:.1f} GiB of buffers per sample; "
                         f"only {have / 2**30:.1f} GiB of memory is available (lower --timesteps)")


def check_input(graph: SpikeGraph, x: np.ndarray, timesteps: int) -> np.ndarray:
    """Validate a batch for the graph's single input node and return what the network sees.
    Direct encoding: (B, *shape) analog, normalised if the Input op carries mean/std
    (``Input.present``). Spike encoding: (B, T, *shape) binary. ``timesteps`` is bounded by
    ``MAX_TIMESTEPS`` (100,000) and by the memory the run's buffers need (:func:`check_memory`)."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) \
            or not 1 <= timesteps <= MAX_TIMESTEPS:
        raise InputError(f"timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {timesteps!r}")
    check_memory(graph, timesteps)
    (inp,) = graph.input_nodes
    t = graph.type_of(inp)
    x = np.asarray(x, dtype=np.float64)
    if t.kind is Kind.ANALOG:
        want = t.shape
        got = x.shape[1:]
    else:
        want = (timesteps, *t.shape)
        got = x.shape[1:]
        if got == want and not np.isin(x, (0.0, 1.0)).all():
            raise InputError("spike-encoded input must be binary (0/1)")
    if x.ndim < 1 or got != tuple(want):
        if x.ndim >= 1 and int(np.prod(got)) == int(np.prod(want)):
            x = x.reshape(x.shape[0], *want)  # e.g. flat 784 vs (1, 28, 28)
        else:
            raise InputError(f"input shape {list(got)} does not match the graph's input {list(want)}")
    return graph.op(inp).present(x)

"""What every execution backend takes and returns, the backend registry, and the pipeline.

A backend is a :class:`snncc.backends.base.Backend` object (``BACKEND`` in its module):
name, Options dataclass, ``lower(graph, options) -> Program``, ``run(program, x, T)``,
artifact ``save``/``check_target``. Backends are looked up by name here (imported lazily:
optional ones such as Lava cost nothing until used). One pipeline for every backend::

    lower(graph, backend, options):  check_ops (ops without a rule, by name) -> infer -> validate
                                     (backend.requirements) -> backend.lower
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from snncc.backends.base import LoweringError
from snncc.ir.graph import SpikeGraph
from snncc.ir.schema import MAX_TIMESTEPS
from snncc.ir.types import GraphError, Kind
from snncc.passes.validate import check_fully_spiking

# name -> (module holding BACKEND, the artifact file that names this target)
BACKENDS = {
    "torch": ("snncc.backends.torch_ref", "target.json"),
    "numba": ("snncc.sims.numba_sim", "target.json"),
    "dense": ("snncc.backends.dense_torch", "target.json"),
    "lava": ("snncc.backends.lava", "lava.json"),
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

    def predictions(self, graph: SpikeGraph) -> np.ndarray:
        """(B,) predicted classes by the rule of ``graph``'s readout (:meth:`snncc.ir.ops.Readout.predict`)."""
        return graph.readout_op().predict(self.output.reshape(self.batch, -1))

    def layer_stats(self, graph: SpikeGraph) -> list[dict]:
        types = graph.infer()
        return [{"name": n, "neurons": types[n].size, "spikes": int(round(self.activity[n]))}
                for n in graph.populations()]


def get_backend(name):
    """The Backend object registered as ``name`` (a Backend is returned unchanged)."""
    if not isinstance(name, str):
        return name
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[name][0]).BACKEND


def make_options(backend, flags: dict, base=None, word: str = "--backend"):
    """The backend's Options from CLI flags ({field: value}; falsy values mean 'not given'),
    on top of ``base`` (e.g. an artifact's options). A flag the backend has no field for is
    refused, naming the backends it applies to."""
    from dataclasses import replace
    backend = get_backend(backend)
    opts = base if base is not None else backend.Options()
    for flag, value in flags.items():
        if not value:
            continue
        if flag not in backend.Options.names():
            owners = [n for n in BACKENDS if flag in get_backend(n).Options.names()]
            raise InputError(f"--{flag.replace('_', '-')} applies to {word} {' or '.join(owners)}")
        opts = replace(opts, **{flag: value})
    return opts


def validate(graph: SpikeGraph, req) -> None:
    """The validation stage: type the graph and enforce a backend's Requirements (one-line
    LoweringError quoting the validator's first violation)."""
    try:
        graph.infer()
        report = check_fully_spiking(graph) if req.fully_spiking else None
    except GraphError as e:
        raise LoweringError(f"invalid graph: {e}") from None
    if report is None:
        return
    rest = [v for v in report.violations if Kind(v.kind) not in req.accept]
    if not rest:
        return
    if not req.accept:
        offer = req.hint and all(Kind(v.kind) in req.could_accept for v in report.violations)
        raise LoweringError(f"graph is not fully spiking: {rest[0]}" + (f" ({req.hint})" if offer else ""))
    raise LoweringError(f"graph is not fully spiking, {req.relaxed.format(kind=rest[0].kind)}: {rest[0]}")


def lower(graph: SpikeGraph, backend, options=None, deploy: bool = False):
    """The one compile path: op coverage -> infer -> validate -> backend.lower; a Program.
    ``deploy``: for an artifact (every backend then requires a fully spiking graph)."""
    backend = get_backend(backend)
    options = options if options is not None else backend.Options()
    backend.check_ops(graph)
    validate(graph, backend.requirements(options, deploy))
    return backend.lower(graph, options)


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
    float64 value per node element per step (and per step of the longest delay) for one sample (the
    numba simulator's chunk floor)."""
    need = 8 * (timesteps + max(1, graph.max_delay())) * sum(t.size for t in graph.infer().values())
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

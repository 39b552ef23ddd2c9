"""Do two runs of one spike graph agree? The single definition used by the demo, `snncc run --compare`,
`snncc quantize` and the tests.

* **Spikes** are compared exactly, as integers, per population, per step, per sample and per neuron
  (the recorded trains of :class:`~snncc.runtime.RunResult`), never as totals or float sums.
* **Analog values** (the currents of synapse nodes, summed into ``RunResult.activity``, and an analog
  readout's output) are floating-point reductions whose summation order differs between backends, so
  their last bits may differ while every spike agrees. They are compared with a stated tolerance:
  ``|a - b| <= ANALOG_RTOL * max(|a|, |b|) + ANALOG_ATOL``. A genuine disagreement upstream (one spike
  more or less) moves such a sum by a whole weight, many orders of magnitude above the tolerance.

Runs are compared batch by batch (``sample_offset`` places a batch in the whole set) and the per-batch
:class:`Agreement` objects are merged, so no whole-dataset spike trains are ever held in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# float64 sums of the same values in another order differ by a few ulp times the number of terms;
# 1e-9 relative leaves eleven orders of magnitude of room below a one-spike change.
ANALOG_RTOL = 1e-9
ANALOG_ATOL = 1e-9


@dataclass(frozen=True)
class SpikeMismatch:
    """The first differing spike of a population: where, and each run's value there."""

    population: str
    step: int
    sample: int
    neuron: tuple
    values: tuple

    def __str__(self) -> str:
        return (f"{self.population}: step {self.step}, sample {self.sample}, neuron {list(self.neuron)}: "
                f"{self.values[0]} vs {self.values[1]}")


@dataclass
class Agreement:
    """The result of comparing run ``names[0]`` with run ``names[1]``.

    ``compared[p]`` / ``differing[p]``: spike entries (step x sample x neuron) compared / differing in
    population ``p``; ``first[p]``: its first mismatch. ``analog[n]``: (a, b) for each analog node whose
    totals differ beyond the tolerance; ``outputs_differ``: samples whose readout values differ beyond it;
    ``predictions_differ``: samples whose predicted class differs."""

    names: tuple = ("a", "b")
    compared: dict = field(default_factory=dict)
    differing: dict = field(default_factory=dict)
    first: dict = field(default_factory=dict)
    analog: dict = field(default_factory=dict)
    outputs_differ: int = 0
    predictions_differ: int = 0
    samples: int = 0

    @property
    def spikes_equal(self) -> bool:
        return bool(self.compared) and not any(self.differing.values())

    @property
    def agree(self) -> bool:
        """Every spike equal, every analog total and readout value within the tolerance."""
        return self.spikes_equal and not self.analog and self.outputs_differ == 0 and self.predictions_differ == 0

    def fraction(self, population: str) -> float:
        """Share of the population's spike entries on which the two runs agree."""
        n = self.compared[population]
        return 1.0 - self.differing[population] / n if n else 1.0

    def merge(self, other: "Agreement") -> "Agreement":
        """The agreement over both sets of samples (``other`` compared later: its first mismatches lose)."""
        out = Agreement(names=self.names, compared=dict(self.compared), differing=dict(self.differing),
                        first=dict(self.first), analog=dict(self.analog),
                        outputs_differ=self.outputs_differ + other.outputs_differ,
                        predictions_differ=self.predictions_differ + other.predictions_differ,
                        samples=self.samples + other.samples)
        for p, n in other.compared.items():
            out.compared[p] = out.compared.get(p, 0) + n
            out.differing[p] = out.differing.get(p, 0) + other.differing[p]
            if p in other.first and p not in out.first:
                out.first[p] = other.first[p]
        for n, (a, b) in other.analog.items():
            a0, b0 = out.analog.get(n, (0.0, 0.0))
            out.analog[n] = (a0 + a, b0 + b)
        return out

    def lines(self) -> list[str]:
        """Human-readable verdict: one line, plus one per disagreeing population or node."""
        a, b = self.names
        if self.agree:
            total = sum(self.compared.values())
            return [f"{a} and {b} agree spike for spike ({total} spike entries in {len(self.compared)} "
                    f"populations over {self.samples} samples; analog values within {ANALOG_RTOL:g} relative)"]
        out = [f"{a} and {b} DISAGREE"]
        if self.spikes_equal:   # e.g. a float32 run: every spike equal, analog sums beyond float64's tolerance
            out.append(f"  spikes: equal ({sum(self.compared.values())} spike entries in {len(self.compared)} "
                       f"populations); only analog values differ beyond {ANALOG_RTOL:g} relative")
        for p, n in self.differing.items():
            if n:
                out.append(f"  {p}: {n} of {self.compared[p]} spike entries differ; first at {self.first[p]}")
        for n, (va, vb) in self.analog.items():
            out.append(f"  {n}: analog total {va!r} vs {vb!r} (beyond tolerance)")
        if self.outputs_differ:
            out.append(f"  readout values differ on {self.outputs_differ} samples")
        if self.predictions_differ:
            out.append(f"  predictions differ on {self.predictions_differ} samples")
        return out

    def as_dict(self) -> dict:
        return {"backends": list(self.names), "agree": self.agree, "spikes_equal": self.spikes_equal,
                "samples": self.samples, "analog_rtol": ANALOG_RTOL, "analog_atol": ANALOG_ATOL,
                "populations": {p: {"compared": self.compared[p], "differing": self.differing[p],
                                    "first_mismatch": str(self.first[p]) if p in self.first else None}
                                for p in self.compared},
                "analog_beyond_tolerance": {n: list(v) for n, v in self.analog.items()},
                "outputs_differ": self.outputs_differ, "predictions_differ": self.predictions_differ}


def analog_close(a, b, rtol: float = ANALOG_RTOL, atol: float = ANALOG_ATOL):
    """Elementwise: ``|a - b| <= rtol * max(|a|, |b|) + atol`` (symmetric, unlike ``np.isclose``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b)) + atol


def compare_runs(graph, a, b, names=("a", "b"), sample_offset: int = 0,
                 rtol: float = ANALOG_RTOL, atol: float = ANALOG_ATOL) -> Agreement:
    """Compare two :class:`~snncc.runtime.RunResult` of ``graph`` on the same batch.

    Both runs must have been recorded (``record=True``): a population missing from either is an error,
    not a silent pass. Spike trains (T, B, *shape) are compared exactly as integers."""
    pops = graph.populations()
    for name, res in zip(names, (a, b)):
        missing = [p for p in pops if p not in res.trains]
        if missing:
            raise ValueError(f"run {name!r} recorded no spike trains for {', '.join(missing)} (run with record=True)")
    if a.batch != b.batch or a.timesteps != b.timesteps:
        raise ValueError(f"runs differ in shape: batch {a.batch} vs {b.batch}, T {a.timesteps} vs {b.timesteps}")
    out = Agreement(names=tuple(names), samples=int(a.batch))
    for p in pops:
        ta, tb = np.asarray(a.trains[p]), np.asarray(b.trains[p])
        if ta.shape != tb.shape:
            raise ValueError(f"population {p}: spike trains of shape {ta.shape} vs {tb.shape}")
        diff = ta != tb  # integer spike values compare exactly in any numeric dtype: no widened copies
        out.compared[p] = int(diff.size)
        out.differing[p] = int(diff.sum())
        if out.differing[p]:
            where = np.argwhere(diff)[0]
            out.first[p] = SpikeMismatch(p, int(where[0]), int(where[1]) + sample_offset,
                                         tuple(int(i) for i in where[2:]),
                                         (int(ta[tuple(where)]), int(tb[tuple(where)])))
    pop_set = set(pops)
    for n in a.activity:
        if n in pop_set:
            continue  # populations: their spikes were compared above, entry by entry
        va, vb = a.activity[n], b.activity.get(n)
        if vb is None or not bool(analog_close(va, vb, rtol, atol)):
            out.analog[n] = (float(va), float("nan") if vb is None else float(vb))
    oa, ob = np.asarray(a.output).reshape(a.batch, -1), np.asarray(b.output).reshape(b.batch, -1)
    if oa.shape != ob.shape:
        raise ValueError(f"readout outputs of shape {oa.shape} vs {ob.shape}")
    out.outputs_differ = int((~analog_close(oa, ob, rtol, atol).all(axis=1)).sum())
    out.predictions_differ = int((a.predictions(graph) != b.predictions(graph)).sum())
    return out

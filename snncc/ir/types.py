"""Value kinds carried by spike-graph edges."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """What an edge carries at each time step.

    SPIKE  -- binary events {0, 1}: what neuromorphic cores route natively.
    COUNT  -- non-negative integers: several spikes summed (SEW spike ADD, sum pooling).
    ANALOG -- real values: pixels, synaptic currents, membrane potentials.
    """

    SPIKE = "spike"
    COUNT = "count"
    ANALOG = "analog"


@dataclass(frozen=True)
class TensorType:
    """Kind and per-sample shape (no batch or time axis) of an edge."""

    kind: Kind
    shape: tuple

    def __str__(self) -> str:
        return f"{self.kind.value}{list(self.shape)}"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class GraphError(ValueError):
    """A malformed or inconsistent spike graph; the message names the node."""

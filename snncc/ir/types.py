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


class StrEnum(str, enum.Enum):
    """An enum whose members are also their string values (JSON, ONNX attributes, f-strings
    and comparisons with plain strings keep working); ``str(m)`` is the value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec) -> str:
        return format(str(self.value), spec)

    @classmethod
    def coerce(cls, value):
        """The member for ``value``, or ``value`` unchanged when it names none (so that the
        op's ``infer`` can refuse it with a message naming the node)."""
        try:
            return cls(value)
        except ValueError:
            return value


class GraphError(ValueError):
    """A malformed or inconsistent spike graph; the message names the node."""

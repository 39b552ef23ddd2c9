"""The one interface every execution backend implements.

A backend turns a validated SpikeGraph into a backend-specific :class:`Program`
(``lower``), runs a program on a batch (``run``), and describes a program in its
artifact's target file (``save`` / ``load``). The pipeline around it
(:func:`snncc.runtime.compile`) is the same for every backend:

    graph -> infer (types) -> validate (the backend's :class:`Requirements`) -> lower -> run

Each backend declares its per-op rules in a table keyed by op class (``rules``) and
the op classes it refuses on purpose (``refuses``: class -> reason); anything else is
refused by name (:meth:`Backend.check_ops`), so a new op can never be silently skipped.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from typing import ClassVar

from snncc.ir.graph import SpikeGraph


class LoweringError(ValueError):
    """The graph (or a compiled artifact) cannot be lowered onto / run on a backend; the
    one-line message says which node or file and why."""


class UnsupportedOp(LoweringError, NotImplementedError):
    """A backend has no rule for an op class (the message names the class and the node)."""


@dataclass(frozen=True)
class Options:
    """A backend's options (subclass per backend; every field is a CLI flag ``--field-name``)."""

    @classmethod
    def names(cls) -> set:
        return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class Requirements:
    """What the validation stage demands before lowering.

    fully_spiking: refuse graphs with violations of the fully-spiking rules, except those
    whose value kind is in ``accept``; ``could_accept`` / ``hint``: kinds an option would
    accept and the hint that names it; ``relaxed``: how to say what the accepting option
    still cannot carry (``{kind}`` is replaced by the refused kind)."""

    fully_spiking: bool = False
    accept: frozenset = frozenset()
    could_accept: frozenset = frozenset()
    hint: str = ""
    relaxed: str = ""


@dataclass
class Program:
    """A graph lowered for one backend with its options; ``plan`` is backend-specific
    (None when the backend executes the graph itself) and ``config`` is what an artifact's
    target file held when the program was loaded from one."""

    backend: str
    graph: SpikeGraph
    options: Options
    plan: object = None
    config: dict = field(default_factory=dict)


class Backend(abc.ABC):
    """name, Options, rules/refuses, requirements, lower, run, save/load of an artifact."""

    name: ClassVar[str]
    Options: ClassVar[type] = Options
    target_file: ClassVar[str] = "target.json"   # the artifact file that names this target
    rules: ClassVar[dict] = {}                   # op class -> rule (backend-specific shape)
    refuses: ClassVar[dict] = {}                 # op class -> why it is refused

    # -- op coverage ---------------------------------------------------------------------
    def handles(self, op_type) -> bool:
        return op_type in self.rules

    def refusal(self, op_type) -> str:
        """Why ``op_type`` is refused (every op class without a rule is refused by name)."""
        return self.refuses.get(op_type, f"{self.name} backend has no rule for op {op_type.__name__}")

    def check_ops(self, graph: SpikeGraph) -> None:
        for n in graph.order():
            t = type(graph.op(n))
            if not self.handles(t):
                raise UnsupportedOp(f"{self.refusal(t)} (node {n!r})")

    # -- pipeline ------------------------------------------------------------------------
    def requirements(self, options: Options, deploy: bool = False) -> Requirements:
        """What the validation stage checks; ``deploy``: for a compiled artifact."""
        return Requirements(fully_spiking=deploy)

    @abc.abstractmethod
    def lower(self, graph: SpikeGraph, options: Options) -> Program:
        """A validated, typed graph -> a Program (raises LoweringError naming the node)."""

    @abc.abstractmethod
    def run(self, program: Program, x, timesteps: int, record: bool = False):
        """Run a batch; returns a :class:`snncc.runtime.RunResult`."""

    def describe(self, options: Options) -> dict:
        """Extra fields of a run's result that depend on the options (e.g. Lava's precision)."""
        return {}

    def label(self, options: Options) -> str:
        """Short text for the run line, e.g. 'floating_pt, graded spikes' ('' for none)."""
        return ""

    # -- artifacts -----------------------------------------------------------------------
    def save(self, program: Program, folder) -> tuple:
        """Write backend-specific files into ``folder`` (a fresh temporary directory);
        return (target-file dict without the common header, summary text)."""
        return {}, program.graph.summary() + "\n"

    def check_target(self, config: dict, options: Options, path) -> None:
        """Refuse a target file whose backend-specific fields (``config``: the file without
        the common header) are missing, unknown or bad: LoweringError naming ``path`` and the
        field. The default: a backend that saves nothing of its own accepts no extra field."""
        for key in sorted(config):
            raise LoweringError(f"{path}: unknown field {key!r}")

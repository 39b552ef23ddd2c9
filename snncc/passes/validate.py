"""Is a spike graph deployable as a fully spiking network? A pure pass returning diagnostics.

Fully spiking means:
  (a) every synapse receives binary spikes -- except a synapse reading the
      direct-encoded analog input (the first layer), reported as a note.
      Average/sum pooling and flatten between spikes and a synapse are linear and
      fold into that synapse, so spikes seen through them still count as spikes.
  (b) every synapse's output current is integrated by exactly one neuron
      population (several synapses or identity spike paths may converge on one).
  (c) no Add carries analog values (membrane potentials / currents) around
      populations: that is MS-ResNet's membrane shortcut.
Each violation names the node that makes the graph hybrid, the kind of value
it carries and why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, is_synapse
from snncc.ir.types import Kind


@dataclass(frozen=True)
class Diagnostic:
    node: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} [{self.kind}]: {self.reason}"


@dataclass
class Report:
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def fully_spiking(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"fully_spiking": self.fully_spiking,
                "violations": [asdict(d) for d in self.violations],
                "notes": [asdict(d) for d in self.notes]}


def origin_of(graph: SpikeGraph, name: str) -> str:
    """Walk back through ops that fold into a synapse (flatten, avg/sum/max pooling)."""
    while graph.op(name).folds_into_synapse:
        name = graph.inputs(name)[0].src
    return name


def _check_synapse_input(graph, syn, types, report, bad_sources):
    src = graph.inputs(syn)[0].src
    origin = origin_of(graph, src)
    kind = types[origin].kind
    if kind is Kind.SPIKE:
        if origin != src and types[src].kind is not Kind.SPIKE:
            report.notes.append(Diagnostic(src, types[src].kind.value,
                                           f"pooling of spikes from {origin!r} folds into synapse {syn!r} (linear)"))
        return
    if graph.op(origin).is_input:
        report.notes.append(Diagnostic(syn, kind.value, "first synapse receives the analog input "
                                                        "directly (direct encoding)"))
        return
    bad_sources.setdefault(origin, []).append(syn)


def _bad_source(graph, origin, kind, synapses) -> list:
    """A SEW spike ADD is named itself; any other non-spike source is named at each synapse it feeds."""
    op = graph.op(origin)
    if isinstance(op, Add) and kind is Kind.COUNT:
        targets = ", ".join(repr(s) for s in synapses)
        return [Diagnostic(origin, kind.value, f"spike ADD (SEW) sums {len(graph.inputs(origin))} spike trains "
                                               f"into integer counts that feed synapse {targets}: not binary spikes")]
    what = "a membrane shortcut" if isinstance(op, Add) else type(op).__name__
    return [Diagnostic(s, kind.value, f"synapse receives {kind.value} values from {origin!r} ({what}) "
                                      f"instead of spikes") for s in synapses]


def _check_synapse_output(graph, syn, report):
    consumers = graph.consumers(syn)
    if len(consumers) == 1 and graph.op(consumers[0]).is_population:
        return
    if any(graph.op(c).is_readout for c in consumers):
        reason = "analog readout: the synapse's current is read out directly, not integrated by a population"
    elif any(isinstance(graph.op(c), Add) for c in consumers):
        adds = [c for c in consumers if isinstance(graph.op(c), Add)]
        reason = f"current flows into Add {adds[0]!r} (a membrane shortcut) instead of one neuron population"
    else:
        reason = f"current goes to {consumers or 'nothing'} instead of exactly one neuron population"
    report.violations.append(Diagnostic(syn, Kind.ANALOG.value, reason))


def _check_analog_add(graph, node, types, report):
    if not isinstance(graph.op(node), Add) or types[node].kind is not Kind.ANALOG:
        return
    pops = [c for c in graph.consumers(node) if graph.op(c).is_population]
    later = [c for c in graph.consumers(node) if c not in pops]
    where = f" past population {pops[0]!r}" if pops else ""
    into = f" into {', '.join(repr(c) for c in later)}" if later else ""
    report.violations.append(Diagnostic(node, Kind.ANALOG.value,
                                        f"membrane shortcut (MS-style): carries analog pre-spike values{where}{into}"))


def check_fully_spiking(graph: SpikeGraph) -> Report:
    types = graph.infer()
    report = Report()
    bad_sources: dict[str, list] = {}
    for n in graph.order():
        if is_synapse(graph.op(n)):
            _check_synapse_input(graph, n, types, report, bad_sources)
            _check_synapse_output(graph, n, report)
        _check_analog_add(graph, n, types, report)
    for origin, synapses in bad_sources.items():
        report.violations.extend(_bad_source(graph, origin, types[origin].kind, synapses))
    order = {n: i for i, n in enumerate(graph.order())}
    report.violations.sort(key=lambda d: order[d.node])
    return report

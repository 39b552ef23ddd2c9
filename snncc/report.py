"""Human-readable tables (rich) for reports; the data comes from snncc.energy's typed EnergyReport."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snncc.energy.base import CATEGORIES


def make_console() -> Console:
    """A console wide enough for the tables even when output is piped to a file."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=180)


def _fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def fmt_breakeven(r) -> str:
    """A break-even rate (spikes per neuron per step) with what it means at the ends."""
    if r is None:
        return "-"
    if r <= 0:
        return "never"
    return f"any ({r:.3g})" if r > 1 else f"{r:.4f}"


def _categories(rep) -> list:
    used = set(rep.breakdown()) | set(rep.ann_breakdown())
    return [c for c in CATEGORIES if c in used] + sorted(used - set(CATEGORIES))


def energy_table(rep, title: str | None = None) -> Table:
    c = rep.conventions
    cats = _categories(rep)
    table = Table(title=title or escape(f"Energy per inference (T={c['timesteps']}, {c['samples']} samples, "
                                        f"{rep.model})"))
    cols = ["layer", "op", "input", "neurons", "firing rate", "FLOPs", "SOPs (AC)", "MACs",
            *[f"{k} (pJ)" for k in cats], "energy (pJ)", "ANN (pJ)", "break-even rate"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("layer", "op", "input") else "right")
    for r in rep.layers:
        k = r.counts
        table.add_row(escape(k.name), k.op, k.input, _fmt(k.neurons), _fmt(k.firing_rate, "{:.4f}"),
                      _fmt(k.flops), _fmt(k.sops), _fmt(k.macs),
                      *[_fmt(r.breakdown.get(cat, 0.0), "{:,.1f}") for cat in cats],
                      _fmt(r.energy_pj, "{:,.1f}"), _fmt(r.ann_energy_pj, "{:,.1f}"), fmt_breakeven(r.breakeven_rate))
    table.add_section()
    snn, ann = rep.breakdown(), rep.ann_breakdown()
    table.add_row("total (SNN)", "", "", "", _fmt(rep.mean_firing_rate, "{:.4f}"), "",
                  _fmt(rep.total_sops), _fmt(rep.total_macs), *[_fmt(snn.get(cat, 0.0), "{:,.1f}") for cat in cats],
                  _fmt(rep.total_energy_pj, "{:,.1f}"), "", fmt_breakeven(rep.breakeven_rate))
    table.add_row("same ANN", "", "", "", "", _fmt(sum(r.counts.flops for r in rep.layers)), "", "",
                  *[_fmt(ann.get(cat, 0.0), "{:,.1f}") for cat in cats], "", _fmt(rep.ann_energy_pj, "{:,.1f}"), "")
    return table


def constants_table(rep) -> Table:
    table = Table(title=escape(f"Constants of {rep.model}"))
    for col in ("constant", "pJ", "source", "evidence grade"):
        table.add_column(col, justify="right" if col == "pJ" else "left")
    for k, v in rep.constants.items():
        table.add_row(escape(k), f"{v['pj']:g}", escape(v["source"]), escape(v["grade"]))
    return table


def conventions_line(rep) -> str:
    c = rep.conventions
    ratio = rep.ann_over_snn
    first = "once per inference" if c["first_layer"] == "once" else "at every step"
    graded = ("one AC per unit of event value" if c.get("graded", "events") == "events"
              else "as dense MACs at every step (syops convention)")
    consts = ", ".join(f"{k}={v['pj']} pJ" for k, v in rep.constants.items())
    return (f"{rep.model}: {consts}; T={c['timesteps']}; direct-encoded first layer counted {first}; "
            f"graded (count) inputs counted {graded}; break-even rate in spikes per neuron per step "
            f"(closed form, energy linear in spike counts); ANN/SNN energy ratio: "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}")


def print_energy(rep, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(energy_table(rep))
    console.print(constants_table(rep))
    if rep.accuracy is not None:
        console.print(f"accuracy: {rep.accuracy:.4f}")
    for k, v in rep.extra.items():
        console.print(escape(f"{k}: {v}"))
    console.print(escape(conventions_line(rep)))


def comparison_table(reports: list) -> Table:
    """One row per (network, energy model): the judgement (fully spiking or hybrid), accuracy, activity,
    energy by category, the ANN under the same model, and the network's break-even rate."""
    cats = [c for c in CATEGORIES if any(c in r.breakdown() for r in reports)]
    table = Table(title="Energy per inference, side by side")
    for col in ("model", "graph", "spiking", "energy model", "accuracy", "mean rate",
                *[f"{k} (nJ)" for k in cats], "energy (nJ)", "ANN (nJ)", "ANN/SNN", "break-even rate"):
        table.add_column(col, justify="left" if col in ("model", "graph", "spiking", "energy model") else "right")
    for r in reports:
        b = r.breakdown()
        table.add_row(escape(str(r.model_path)), escape(str(r.name)), "fully" if r.fully_spiking else "hybrid",
                      escape(r.model),
                      _fmt(r.accuracy, "{:.4f}"), _fmt(r.mean_firing_rate, "{:.4f}"),
                      *[_fmt(b.get(k, 0.0) / 1e3, "{:,.2f}") for k in cats],
                      _fmt(r.total_energy_pj / 1e3, "{:,.2f}"), _fmt(r.ann_energy_pj / 1e3, "{:,.2f}"),
                      _fmt(r.ann_over_snn, "{:.2f}x"), fmt_breakeven(r.breakeven_rate))
    return table


def print_comparison(reports: list, console: Console | None = None) -> None:
    console = console or make_console()
    for r in reports:
        console.print(energy_table(r, title=escape(f"{r.model_path} ({r.name}) under {r.model}")))
    console.print(comparison_table(reports))
    for model in dict.fromkeys(r.model for r in reports):
        first = next(r for r in reports if r.model == model)
        console.print(constants_table(first))
        console.print(escape(conventions_line(first)))
    for r in reports:
        for k, v in r.extra.items():
            console.print(escape(f"{r.name} under {r.model}, {k}: {v}"))

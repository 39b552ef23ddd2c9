"""Human-readable tables (rich) for reports; the data comes from snncc.energy's typed EnergyReport."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def make_console() -> Console:
    """A console wide enough for the tables even when output is piped to a file."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=140)


def _fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def energy_table(rep, title: str | None = None) -> Table:
    c = rep.conventions
    table = Table(title=title or f"Energy per inference (T={c['timesteps']}, {c['samples']} samples, {rep.model})")
    for col in ("layer", "op", "input", "neurons", "firing rate", "FLOPs", "SOPs (AC)", "MACs", "energy (pJ)"):
        table.add_column(col, justify="left" if col in ("layer", "op", "input") else "right")
    for r in rep.layers:
        k = r.counts
        table.add_row(k.name, k.op, k.input, _fmt(k.neurons), _fmt(k.firing_rate, "{:.4f}"),
                      _fmt(k.flops), _fmt(k.sops), _fmt(k.macs), _fmt(r.energy_pj, "{:,.1f}"))
    table.add_section()
    table.add_row("total (SNN)", "", "", "", _fmt(rep.mean_firing_rate, "{:.4f}"), "",
                  _fmt(rep.total_sops), _fmt(rep.total_macs), _fmt(rep.total_energy_pj, "{:,.1f}"))
    table.add_row("same ANN", "", "", "", "", "", "", "", _fmt(rep.ann_energy_pj, "{:,.1f}"))
    return table


def conventions_line(rep) -> str:
    c = rep.conventions
    ratio = rep.ann_over_snn
    first = "once per inference" if c["first_layer"] == "once" else "at every step"
    consts = ", ".join(f"{k}={v['pj']} pJ" for k, v in rep.constants.items())
    sources = "; ".join(sorted({v["source"] for v in rep.constants.values()}))
    return (f"{rep.model}: {consts} ({sources}); T={c['timesteps']}; "
            f"direct-encoded first layer counted {first}; ANN/SNN energy ratio: "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}")


def print_energy(rep, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(energy_table(rep))
    if rep.accuracy is not None:
        console.print(f"accuracy: {rep.accuracy:.4f}")
    console.print(conventions_line(rep))


def comparison_table(reports: list) -> Table:
    """One row per model: the judgement (fully spiking or hybrid), accuracy, activity, ops and energy."""
    table = Table(title="Energy per inference, side by side")
    for col in ("model", "graph", "spiking", "accuracy", "mean rate", "SOPs (AC)", "MACs", "energy (nJ)",
                "ANN (nJ)", "ANN/SNN"):
        table.add_column(col, justify="left" if col in ("model", "graph", "spiking") else "right")
    for r in reports:
        table.add_row(r.model_path, r.name, "fully" if r.fully_spiking else "hybrid",
                      _fmt(r.accuracy, "{:.4f}"), _fmt(r.mean_firing_rate, "{:.4f}"),
                      _fmt(r.total_sops), _fmt(r.total_macs), _fmt(r.total_energy_pj / 1e3, "{:,.2f}"),
                      _fmt(r.ann_energy_pj / 1e3, "{:,.2f}"), _fmt(r.ann_over_snn, "{:.2f}x"))
    return table


def print_comparison(reports: list, console: Console | None = None) -> None:
    console = console or make_console()
    for r in reports:
        console.print(energy_table(r, title=f"{r.model_path} ({r.name})"))
    console.print(comparison_table(reports))
    console.print(conventions_line(reports[0]))

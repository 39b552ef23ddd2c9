"""Figures (matplotlib, Agg backend, written atomically as PNG)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snncc.fileio import atomic_path  # noqa: E402


def plot_energy_comparison(reports: list, path) -> None:
    """Left: firing rate of each layer's population across depth; right: energy per inference
    split into accumulates (spike inputs) and multiply-accumulates (analog inputs)."""
    fig, (ax_rate, ax_energy) = plt.subplots(1, 2, figsize=(12, 5.2))
    labels = []
    for r in reports:
        label = f"{r.name} ({'fully spiking' if r.fully_spiking else 'hybrid'}, acc {r.accuracy:.3f})"
        labels.append(r.name)
        rates = [row.counts.firing_rate for row in r.layers]
        xs = [i for i, v in enumerate(rates) if v is not None]
        ax_rate.plot(xs, [rates[i] for i in xs], marker="o", ms=3, label=label)
    ax_rate.set(xlabel="synapse layer (depth order)", ylabel="firing rate of the driven population",
                title="Firing rate per layer")
    ax_rate.legend(fontsize=7)
    xs = range(len(reports))
    # energy of spike-input (SOP) and analog-input (MAC) layers under each report's own model; side by
    # side, not stacked: stacked bars do not survive a log axis
    spike_e = [sum(row.energy_pj for row in r.layers if row.counts.macs == 0) / 1e3 for r in reports]
    analog_e = [sum(row.energy_pj for row in r.layers if row.counts.macs > 0) / 1e3 for r in reports]
    ax_energy.bar([x - 0.2 for x in xs], spike_e, width=0.4, label="layers with spike inputs (SOPs)")
    ax_energy.bar([x + 0.2 for x in xs], analog_e, width=0.4, label="layers with analog inputs (MACs)")
    ax_energy.scatter(list(xs), [r.total_energy_pj / 1e3 for r in reports], color="r", marker="o",
                      label="SNN total", zorder=3)
    ax_energy.scatter(list(xs), [r.ann_energy_pj / 1e3 for r in reports], color="k", marker="_", s=400,
                      label="same ANN", zorder=3)
    ax_energy.set_xticks(list(xs), labels)
    c = reports[0].conventions
    ax_energy.set(ylabel="energy per inference (nJ, log scale)", title=f"Energy (T={c['timesteps']}, {reports[0].model})",
                  yscale="log")
    ax_energy.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax_energy.tick_params(axis="x", labelsize=7, rotation=15)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

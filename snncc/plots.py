"""Figures (matplotlib, Agg backend, written atomically as PNG)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snncc.energy.base import CATEGORIES  # noqa: E402
from snncc.fileio import atomic_path  # noqa: E402

_COLORS = dict(zip(CATEGORIES, ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red")))


def plot_energy_comparison(reports: list, path, force: bool = False) -> None:
    """One panel per (energy model, network): energy per inference of every layer as a bar stacked by
    category (compute / memory / addressing / neuron updates / routing), the same ANN layer's energy
    under that model as a black tick, titled with the totals and the break-even rate."""
    models = list(dict.fromkeys(r.model for r in reports))
    nets = list(dict.fromkeys(r.model_path or r.name for r in reports))
    fig, axes = plt.subplots(len(models), len(nets), figsize=(4.6 * len(nets) + 1, 3.4 * len(models) + 0.6),
                             squeeze=False)
    seen = set()
    for r in reports:
        ax = axes[models.index(r.model)][nets.index(r.model_path or r.name)]
        xs = range(len(r.layers))
        bottom = [0.0] * len(r.layers)
        for cat in CATEGORIES:
            vals = [row.breakdown.get(cat, 0.0) / 1e3 for row in r.layers]
            if any(vals):
                ax.bar(xs, vals, bottom=bottom, color=_COLORS[cat], width=0.7,
                       label=None if cat in seen else cat)
                seen.add(cat)
                bottom = [b + v for b, v in zip(bottom, vals)]
        ax.scatter(list(xs), [row.ann_energy_pj / 1e3 for row in r.layers], color="k", marker="_", s=160,
                   label=None if "ann" in seen else "same ANN layer", zorder=3)
        seen.add("ann")
        ax.set_xticks(list(xs), [row.counts.name for row in r.layers], rotation=60, fontsize=6, ha="right")
        be = "-" if r.breakeven_rate is None else f"{r.breakeven_rate:.3g}"
        kind = "fully spiking" if r.fully_spiking else "hybrid"
        ax.set_title(f"{r.name} ({kind}) | {r.model}\nSNN {r.total_energy_pj / 1e3:,.1f} nJ, "
                     f"ANN {r.ann_energy_pj / 1e3:,.1f} nJ, break-even r={be}", fontsize=7)
        ax.set_ylabel("nJ per inference", fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    c = reports[0].conventions
    fig.suptitle(f"Energy per layer (T={c['timesteps']}, first layer {c['first_layer']}, graded inputs "
                 f"{c.get('graded', 'events')})", fontsize=9)
    fig.legend(loc="lower center", ncol=min(len(CATEGORIES) + 1, 3 * len(nets)), fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    with atomic_path(path, "png", force) as tmp:   # never over a PNG snncc did not write
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

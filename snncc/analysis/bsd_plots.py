"""Plots of a BSD / BPTT / ANN training run from its ``metrics.json`` (matplotlib, Agg backend).

``plot_run(run_dir)`` writes, into ``run_dir``:

* ``curves.png``       train loss and train / test accuracy per epoch (for sequence
                        runs: the recorded test metrics, e.g. MSE / MAE);
* ``hamming.png``      Hamming similarity of Type 1 and Type 2 spikes per layer (Fig. 3c);
* ``alignment.png``    cosine of W_i and Theta_i^T per layer (App. F.4);
* ``firing_rates.png`` mean firing rate per population.

A plot whose data the run did not record (BPTT and ANN runs have no Type 2 path)
is skipped. Returns the paths written.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snncc.fileio import atomic_path  # noqa: E402


class PlotError(ValueError):
    """The run directory has no usable metrics.json."""


def _load(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise PlotError(f"no metrics.json in {run_dir} (is it a training run directory?)")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlotError(f"{path}: unreadable metrics ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list) or not metrics["history"]:
        raise PlotError(f"{path}: no per-epoch history to plot")
    return metrics


def _series(history, key) -> dict:
    """{name: ([epochs], [values])} for a per-epoch dict-valued entry."""
    out = {}
    for h in history:
        for name, value in (h.get(key) or {}).items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(h["epoch"])
            ys.append(value)
    return out


def _save(fig, path: Path, force: bool = False) -> Path:
    with atomic_path(path, kind="png", force=force) as tmp:  # never over a PNG snncc did not write
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _lines(ax, series: dict, ylabel: str, title: str):
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, ncol=2)


def _title(metrics) -> str:
    cfg = metrics.get("config") or {}
    return " ".join(str(cfg[k]) for k in ("method", "model", "dataset", "task") if cfg.get(k))


def plot_run(run_dir, force: bool = False) -> list:
    """Write the run's PNGs into ``run_dir``; returns their paths. Raises PlotError."""
    run_dir = Path(run_dir)
    metrics = _load(run_dir)
    hist, name = metrics["history"], _title(metrics)
    epochs = [h["epoch"] for h in hist]
    written = []

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    if all("train_loss" in h for h in hist):
        ax_loss.plot(epochs, [h["train_loss"] for h in hist], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="train loss (per sample)", title=f"{name}: loss")
    ax_loss.grid(alpha=0.3)
    scores = {k: [h.get(k) for h in hist] for k in ("train_accuracy", "test_accuracy", "test_mse", "test_mae")}
    for key, ys in scores.items():
        if all(isinstance(v, (int, float)) for v in ys):
            ax_acc.plot(epochs, ys, marker="o", ms=3, label=key.replace("_", " "))
    ax_acc.set(xlabel="epoch", title=f"{name}: metrics")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    written.append(_save(fig, run_dir / "curves.png", force))

    for key, fname, ylabel, title in (
            ("hamming", "hamming.png", "Hamming similarity", "Type 1 vs Type 2 spikes (Fig. 3c)"),
            ("alignment", "alignment.png", "cos(W, Theta^T)", "weight alignment (App. F.4)"),
            ("firing_rates", "firing_rates.png", "spikes / neuron / step", "firing rate per population")):
        series = _series(hist, key)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        _lines(ax, series, ylabel, f"{name}: {title}")
        written.append(_save(fig, run_dir / fname, force))
    return written

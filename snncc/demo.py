"""`snncc demo`: the whole path on the embedded digits set, in about a minute on 2 cores.

train (BSD MLP) -> export -> validate -> simulate with numba and torch (must agree
spike for spike: every population's train compared exactly, per step and sample, by
:mod:`snncc.agreement`) -> energy report.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console  # noqa: F401  (type of the console argument)

from snncc.data.datasets import load_split
from snncc.energy import energy_report
from snncc.evaluate import evaluate_agreement
from snncc.ir import serialize
from snncc.passes.validate import check_fully_spiking
from snncc.report import conventions_line, energy_table, make_console
from snncc.training.train import TrainConfig, train

class DemoFailed(RuntimeError):
    pass


def _stage(console, title):
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def run_demo(out_dir="runs/demo", epochs=None, console: Console | None = None) -> dict:
    console = console or make_console()
    out = Path(out_dir)
    t0 = _stage(console, "1/5 train: BSD MLP on scikit-learn digits (8x8)")
    cfg = TrainConfig(method="bsd", model="mlp", dataset="digits", seed=0)
    if epochs:
        cfg.epochs = epochs
    # one thread: on a busy 2-core machine two torch threads can be several times slower
    metrics = train(cfg, out / "train", progress=True, threads=1)
    console.print(f"BSD test accuracy (training module): {metrics['test_accuracy']:.4f} "
                  f"[{time.perf_counter() - t0:.1f} s]")

    _stage(console, "2/5 export: feedforward (Type 1) path -> spike graph; Type 2 path stripped")
    from snncc.cli.cmd_train import export_checkpoint
    graph = export_checkpoint(out / "train" / "model.pt")
    serialize.save(graph, out / "model.snn.onnx")
    graph = serialize.load(out / "model.snn.onnx")
    console.print(graph.summary())

    _stage(console, "3/5 validate")
    report = check_fully_spiking(graph)
    for note in report.notes:
        console.print(f"note: {note}")
    console.print("fully spiking" if report.fully_spiking else f"hybrid: {report.violations}")

    _stage(console, "4/5 simulate: numba event-driven vs torch reference, spike trains compared")
    x, y = load_split("digits", "test")
    T = graph.metadata["timesteps"]
    results, agreement = evaluate_agreement(graph, ("numba", "torch"), x, y, T)
    for backend in ("numba", "torch"):
        console.print(f"{backend:>5}: accuracy {results[backend]['accuracy']:.4f} on {len(x)} samples "
                      f"[{results[backend]['seconds']:.2f} s]")
    for layer_nb, layer_t in zip(results["numba"]["layers"], results["torch"]["layers"]):
        console.print(f"  {layer_nb['name']:<22} spikes numba {layer_nb['spikes']:>8}  torch {layer_t['spikes']:>8}")
    same = agreement.agree
    for line in agreement.lines():
        console.print(line if same else f"[red]{line}")
    if not same:
        raise DemoFailed(agreement.lines()[0])

    _stage(console, "5/5 energy (Kundu op counts, 45 nm)")
    rep = energy_report(graph, results["numba"]["activity"], len(x), T)
    console.print(energy_table(rep))
    console.print(conventions_line(rep))
    summary = {"train_accuracy_module": metrics["test_accuracy"], "accuracy": results["numba"]["accuracy"],
               "fully_spiking": report.fully_spiking, "backends_agree": same,
               "total_energy_pj": rep.total_energy_pj, "ann_energy_pj": rep.ann_energy_pj,
               "seconds": time.perf_counter() - t0}
    console.rule(f"[bold]done in {summary['seconds']:.1f} s: accuracy {summary['accuracy']:.4f}, "
                 f"SNN {rep.total_energy_pj / 1e3:.1f} nJ vs ANN {rep.ann_energy_pj / 1e3:.1f} nJ per inference")
    return summary


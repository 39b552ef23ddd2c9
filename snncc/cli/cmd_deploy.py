"""Deployment commands: validate, inspect, run, energy, compile, quantize."""
from __future__ import annotations

import json
import os
import sys

import click

from snncc.cli.common import (
    DATA_DIR_OPTION, DATASET_OPTION, dataset_for, emit_json, FORCE_OPTION, LIMIT_OPTION, load_graph,
    load_test_split, TIMESTEPS_OPTION, EXIT_HYBRID)
from snncc import fileio
from snncc.runtime import BACKENDS

THREADS_OPTION = click.option("--threads", type=click.IntRange(min=0), default=0,
                              help="numba / dense: worker threads (0: numba's / torch's default)")


# -- validate / inspect -------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def validate(model, as_json):
    """Check that MODEL is fully spiking; exit 1 naming each node that makes it hybrid."""
    from snncc.passes.validate import check_fully_spiking
    report = check_fully_spiking(load_graph(model))
    if as_json:
        emit_json(report.as_dict())
    else:
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.fully_spiking:
            click.echo("fully spiking")
        for v in report.violations:
            click.echo(f"hybrid: {v}")
    sys.exit(0 if report.fully_spiking else EXIT_HYBRID)


@click.command()
@click.argument("model", type=click.Path())
def inspect(model):
    """Print the graph: nodes, inputs, value kinds and shapes."""
    graph = load_graph(model)
    click.echo(graph.summary())
    if graph.metadata:
        click.echo(f"metadata: {json.dumps(graph.metadata)}")


# -- run / energy -------------------------------------------------------------------
def _program(model, backend, flags=None):
    """The lowered program to run: a compiled artifact's (its target and options, CLI flags on
    top; ``backend`` overrides the target, then only the flags apply), or a graph file's for
    ``backend`` (default numba). Lowered (validated, refused if unsupported) before any data
    is read."""
    from snncc.runtime import get_backend, lower, make_options
    flags = flags or {}
    if os.path.isdir(model):
        from snncc.artifact import read_artifact
        art = read_artifact(model)
        be = get_backend(backend or art.backend)
        options = make_options(be, flags, art.options if be.name == art.backend else None)
        return lower(art.graph, be, options, deploy=be.name == art.backend)
    graph = load_graph(model)
    be = get_backend(backend or "numba")
    return lower(graph, be, make_options(be, flags))


def _evaluate(model, backend, dataset, data_dir, limit, timesteps, progress=True, flags=None, compare=None):
    """Evaluate MODEL on ``backend``; with ``compare`` (another backend) also run that one on every batch
    and compare the spike trains (:mod:`snncc.agreement`). Returns (program, result, agreement or None)."""
    from snncc.evaluate import default_timesteps, evaluate_programs
    programs = [_program(model, backend, flags)]
    if compare is not None:
        programs.append(_program(model, compare))
    t = default_timesteps(programs[0].graph, timesteps)
    x, y = load_test_split(dataset_for(programs[0].graph, dataset), data_dir, limit)
    results, agreement = evaluate_programs(programs, x, y, t, progress=progress)
    return programs[0], results[0], agreement


@click.command()
@click.argument("model", type=click.Path())
@click.option("--backend", default=None, help="torch (float64 reference), numba, dense (float32 multi-step torch: may flip spikes near the threshold vs torch) or lava (default: the compiled target, else numba)")
@DATASET_OPTION
@DATA_DIR_OPTION
@LIMIT_OPTION
@TIMESTEPS_OPTION
@click.option("--graded-spikes", "graded", is_flag=True,
              help="Lava: send spike counts (SEW spike ADD) as Loihi 2 graded spikes instead of refusing the graph")
@THREADS_OPTION
@click.option("--compare", "compare", default=None, metavar="BACKEND",
              help="also run BACKEND on every batch and compare spike trains exactly (exit 1 if they differ)")
@click.option("--json", "as_json", is_flag=True)
def run(model, backend, dataset, data_dir, limit, timesteps, graded, threads, compare, as_json):
    """Simulate MODEL (a .snn.onnx file or a `snncc compile` directory) on a dataset's test split."""
    from snncc.runtime import get_backend
    program, res, agreement = _evaluate(model, backend, dataset, data_dir, limit, timesteps,
                                        progress=not as_json, flags={"graded_spikes": graded, "threads": threads},
                                        compare=compare)
    res.pop("activity")
    res.pop("seconds")
    if agreement is not None:
        res["agreement"] = agreement.as_dict()
    if as_json:
        emit_json(res)
    else:
        label = get_backend(program.backend).label(program.options)
        extra = f" [{label}]" if label else ""
        click.echo(f"backend {res['backend']}{extra}: accuracy {res['accuracy']:.4f} on {res['samples']} samples, "
                   f"T={res['timesteps']}")
        for layer in res["layers"]:
            rate = layer["spikes"] / (layer["neurons"] * res["samples"] * res["timesteps"])
            click.echo(f"  {layer['name']:<20} {layer['neurons']:>8} neurons {layer['spikes']:>12} spikes  "
                       f"rate {rate:.4f}")
        for line in agreement.lines() if agreement is not None else ():
            click.echo(line)
    if agreement is not None and not agreement.agree:
        sys.exit(EXIT_HYBRID)


@click.group()
def energy():
    """Energy estimates from measured firing rates."""


@energy.command("report")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@DATASET_OPTION
@DATA_DIR_OPTION
@LIMIT_OPTION
@TIMESTEPS_OPTION
@click.option("--backend", default="numba", show_default=True, help="torch, numba, dense or lava (as for run)")
@THREADS_OPTION
@click.option("--energy-model", "energy_models", multiple=True, metavar="NAME|FILE",
              help="kundu (or kundu:fp32-45nm, kundu:int32-45nm), lemaire, loihi, or a TOML/JSON file of "
                   "constants; repeat for several (default: kundu)")
@click.option("--first-layer", type=click.Choice(["once", "per-step"]), default="once", show_default=True,
              help="count the direct-encoded first layer's MACs once per inference or at every step")
@click.option("--graded", type=click.Choice(["events", "mac"]), default="events", show_default=True,
              help="graded (count) inputs, e.g. after a SEW spike ADD: one AC per unit of event value, or "
                   "dense MACs at every step (the syops convention)")
@click.option("--compare", is_flag=True, help="several MODELS side by side (implied by more than one)")
@click.option("--png", "png_path", type=click.Path(), default=None,
              help="figure: per-layer energy stacked by category, one panel per model and energy model")
@click.option("--json", "json_path", type=click.Path(), default=None, help="also write the report as JSON to F")
@FORCE_OPTION
def energy_report_cmd(models, dataset, data_dir, limit, timesteps, backend, threads, energy_models, first_layer,
                      graded, compare, png_path, json_path, force):
    """Per-layer firing rate, operations and energy per inference by category (compute, memory,
    addressing, neuron updates, routing), the same ANN under the same energy model, and the
    break-even firing rate per layer and for the network.

    With several MODELS (e.g. fully-spiking and hybrid variants) and/or several --energy-model, a
    side-by-side table of every pair, and with --png one figure of stacked bars per layer."""
    from snncc.energy import get_model
    from snncc.energy.base import price_counts
    from snncc.energy.counts import count_layers, mean_firing_rate
    from snncc.passes.validate import check_fully_spiking
    from snncc.report import print_comparison, print_energy
    try:
        priced = [get_model(name) for name in (energy_models or ("kundu",))]   # refuse a bad model first
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--energy-model") from None
    for path, kind in ((png_path, "png"), (json_path, "json")):
        if path:
            fileio.check_output(path, kind, force)   # refuse before the (long) runs
    reports = []
    for model in models:
        program, res, _ = _evaluate(model, backend, dataset, data_dir, limit, timesteps, flags={"threads": threads})
        graph = program.graph
        samples, steps = res["samples"], res["timesteps"]
        counts = count_layers(graph, res["activity"], samples, steps, first_layer.replace("-", "_"), graded)
        conventions = {"timesteps": steps, "samples": samples, "first_layer": first_layer.replace("-", "_"),
                       "graded": graded, "per": "inference (one sample, all T steps)"}
        rate = mean_firing_rate(graph, res["activity"], samples, steps)
        spiking = check_fully_spiking(graph).fully_spiking
        for energy_model in priced:
            rep = price_counts(counts, energy_model, conventions, rate)
            rep.accuracy, rep.model_path, rep.name, rep.fully_spiking = res["accuracy"], str(model), graph.name, spiking
            reports.append(rep)
    if len(reports) == 1 and not compare:
        print_energy(reports[0])
    else:
        print_comparison(reports)
    if png_path:
        from snncc.plots import plot_energy_comparison
        plot_energy_comparison(reports, png_path, force)
        click.echo(f"figure -> {png_path}")
    if json_path:
        dicts = [r.as_dict() for r in reports]
        emit_json(dicts[0] if len(dicts) == 1 and not compare else {"models": dicts}, json_path, force)


@click.command("compile")
@click.argument("model", type=click.Path())
@click.option("--target", type=click.Choice(sorted(BACKENDS)), required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(), required=True, help="artifact directory")
@click.option("--fixed-point", is_flag=True, help="Lava: Loihi bit-accurate fixed point (select_tag fixed_pt)")
@click.option("--graded-spikes", "graded", is_flag=True,
              help="Lava: lower spike counts (SEW spike ADD) to Loihi 2 graded spikes instead of refusing the graph")
@click.option("--netx", is_flag=True,
              help="Lava: also write OUT_DIR/model.net, the network as a lava-dl netx HDF5 file")
@FORCE_OPTION
def compile_cmd(model, target, out_dir, fixed_point, graded, netx, force):
    """Lower a fully spiking graph for a target; writes an artifact `snncc run` can load.

    An existing OUT_DIR is replaced only if it is an empty folder or a `snncc compile --target TARGET`
    artifact; with --force any other folder is moved aside to OUT_DIR.orig-N (never deleted)."""
    from snncc.artifact import compile_artifact
    from snncc.runtime import make_options
    fileio.check_output(out_dir, target, force, is_dir=True)
    graph = load_graph(model)
    options = make_options(target, {"fixed_point": fixed_point, "graded_spikes": graded, "netx": netx},
                           word="--target")
    if force:
        fileio.move_aside_foreign(out_dir, target)
    compile_artifact(graph, target, options, out_dir)
    mode = ", ".join(m for m, on in (("fixed point", fixed_point), ("graded spikes", graded),
                                     ("netx model.net", netx)) if on)
    click.echo(f"compiled for {target}{f' ({mode})' if mode else ''} -> {out_dir}")
    summary = os.path.join(out_dir, "summary.txt")
    if os.path.isfile(summary):
        click.echo(open(summary).read().rstrip())


@click.command()
@click.argument("model", type=click.Path())
@DATASET_OPTION
@DATA_DIR_OPTION
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@TIMESTEPS_OPTION
@click.option("--input-bound", type=float, default=1.0, show_default=True, help="max |input| the scales must cover")
@click.option("--json", "json_path", type=click.Path(), default=None, help="also write the report as JSON to F")
@FORCE_OPTION
def quantize(model, dataset, data_dir, limit, timesteps, input_bound, json_path, force):
    """Loihi fixed point: per-layer quantisation error, and accuracy of the fixed-point network vs the float one.

    The fixed-point run uses snncc's integer reference, which is bit-exact with Lava's fixed_pt models
    (tests/test_lava_fixed.py), so no Lava runtime is needed; the float run is the numba simulator."""
    import numpy as np

    from snncc.backends.lava.integer import run_integer
    from snncc.backends.lava.quantizer import lower_fixed
    from snncc.evaluate import default_timesteps
    from snncc.sims import numba_sim
    if not (np.isfinite(input_bound) and input_bound > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {input_bound}", param_hint="'--input-bound'")
    if json_path:
        fileio.check_output(json_path, "json", force)
    graph = load_graph(model)
    t = default_timesteps(graph, timesteps)
    x, y = load_test_split(dataset_for(graph, dataset), data_dir, limit)
    plan = lower_fixed(graph, input_bound=input_bound)
    click.echo(plan.fixed.summary())
    flt = numba_sim.run(graph, x, t, record=True)
    fix = run_integer(graph, x, t, plan=plan, record=True, input_bound=input_bound)
    from snncc.agreement import compare_runs
    agreement = compare_runs(graph, flt, fix, names=("float", "fixed"))
    agree = {p: agreement.fraction(p) for p in graph.populations()}
    rep = {"samples": int(len(x)), "timesteps": t,
           "float_accuracy": float((flt.predictions(graph) == y).mean()),
           "fixed_accuracy": float((fix.predictions(graph) == y).mean()),
           "prediction_agreement": float((flt.predictions(graph) == fix.predictions(graph)).mean()),
           "spike_agreement": agree, "layers": plan.fixed.report}
    click.echo(f"accuracy on {len(x)} samples: float {rep['float_accuracy']:.4f}, fixed point "
               f"{rep['fixed_accuracy']:.4f}; predictions agree on {rep['prediction_agreement']:.2%}")
    for p, a in agree.items():
        click.echo(f"  spike agreement {p:<24} {a:.4f}")
    if json_path:
        emit_json(json.loads(json.dumps(rep, default=lambda o: o.tolist() if isinstance(o, np.ndarray)
                                         else (o.item() if hasattr(o, "item") else str(o)))), json_path, force)


COMMANDS = (validate, inspect, run, energy, compile_cmd, quantize,)

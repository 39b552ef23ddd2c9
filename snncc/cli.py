"""The `snncc` command line: train -> export -> validate -> run / energy -> bench.

Every command turns known failures (bad files, bad names, bad shapes) into one
line on stderr and a non-zero exit; outputs are written atomically.
Exit codes: 0 ok, 1 validation found a hybrid graph, 2 bad input, 3 internal error.
"""
from __future__ import annotations

import json
import os
import sys

import click

from snncc import fileio

EXIT_HYBRID, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


def _user_errors() -> tuple:
    """Exception types that mean 'the user gave us something wrong' (imported lazily)."""
    from snncc.data.datasets import DatasetError
    from snncc.exporter import ExportError
    from snncc.ir.serialize import SerializeError
    from snncc.ir.types import GraphError
    from snncc.runtime import InputError
    from snncc.training.train import CheckpointError, ConfigError, TrainingDiverged
    from snncc.backends.lava_backend import LoweringError
    from snncc.analysis.bsd_plots import PlotError
    from snncc.data.sequences import SequenceError
    from snncc.models.resnet import ModelError
    from snncc.training.mskd import MSKDError
    errors = [LoweringError, ModelError, PlotError, SequenceError, MSKDError, DatasetError, ExportError, SerializeError, GraphError, InputError, CheckpointError,
              ConfigError, TrainingDiverged, FileNotFoundError, IsADirectoryError, PermissionError]
    try:
        from snncc.compat.lava import LavaUnavailable
        errors.append(LavaUnavailable)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # output piped into `head` etc.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 -- the CLI must never show a traceback
            if os.environ.get("SNNCC_DEBUG"):
                raise
            if isinstance(e, _user_errors()):
                click.echo(f"error: {_one_line(e)}", err=True)
                ctx.exit(EXIT_USAGE)
            click.echo(f"error: internal error ({type(e).__name__}: {_one_line(e)}); "
                       f"set SNNCC_DEBUG=1 for a traceback", err=True)
            ctx.exit(EXIT_INTERNAL)


def _one_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return text.splitlines()[0]


@click.group(cls=_Group)
@click.version_option(package_name="snncc")
def main():
    """snncc: spiking neural network compiler and simulator."""


# -- helpers ------------------------------------------------------------------
def _load_graph(path):
    """A spike-graph file, or a directory written by `snncc compile` (its graph.snn.onnx)."""
    from snncc.ir.serialize import load
    if os.path.isdir(path):
        from snncc.backends.lava_backend import load_artifact
        if os.path.isfile(os.path.join(path, "lava.json")):
            return load_artifact(path)[0]
        return load(os.path.join(path, "graph.snn.onnx"))
    return load(path)


def _artifact_target(path):
    """The target a compiled artifact directory was built for (None for a plain graph file)."""
    if os.path.isdir(path):
        return "lava" if os.path.isfile(os.path.join(path, "lava.json")) else "numba"
    return None


def _dataset_for(graph, dataset):
    name = dataset or graph.metadata.get("dataset")
    if not name:
        raise click.UsageError("the graph records no dataset: pass --dataset")
    return name


def _test_data(name, data_dir, limit, seed=0):
    from snncc.data.datasets import load_split
    return load_split(name, "test", data_dir=data_dir, limit=limit, seed=seed)


def _emit_result(res: dict, as_json: bool) -> None:
    """A benchmark's result: JSON, or one aligned `key: value` line per entry."""
    if as_json:
        _emit_json(res)
        return
    for k, v in res.items():
        click.echo(f"{k:>28}: {v}")


def _emit_json(obj, path=None):
    text = json.dumps(obj, indent=2)
    if path and path != "-":
        fileio.write_text(path, text + "\n")
    else:
        click.echo(text)


_DATASET = click.option("--dataset", "dataset", default=None, help="digits, mnist, fashion-mnist, cifar10, cifar100")
_DATA_DIR = click.option("--data-dir", type=click.Path(), default=None, help="folder with the dataset's files")
_LIMIT = click.option("--limit", type=click.IntRange(min=1), default=None, help="evaluate on N test samples")
_TIMESTEPS = click.option("--timesteps", type=click.IntRange(min=1), default=None, help="override T")


# -- train / export -------------------------------------------------------------
RESNET_METHODS = ("ann", "direct", "kd", "mskd", "mskd-norecon")
BSD_MODELS = ("mlp", "cnn")


@main.command()
@click.option("--method", type=click.Choice(["bsd", "bptt", *RESNET_METHODS]), required=True,
              help="bsd/bptt/ann on mlp/cnn (BSD paper); ann/direct/kd/mskd/mskd-norecon on ResNets (MSKD paper)")
@click.option("--model", default="mlp", show_default=True,
              help="mlp, cnn, or {spike,sew,ms}-resnet{18,34,50,101} / resnet{18,...} (ANN teacher)")
@click.option("--dataset", default="digits", show_default=True)
@_DATA_DIR
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@_TIMESTEPS
@click.option("--train-samples", type=click.IntRange(min=1), default=None, help="subsample the training set")
@click.option("--test-samples", type=click.IntRange(min=1), default=None, help="subsample the test set")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--lam", type=float, default=None, help="ReCo penalty weight (BSD)")
@click.option("--interlayer-loss", type=click.Choice(["reco", "mse", "infonce"]), default=None)
@click.option("--v-th", type=float, default=None, help="feedforward (Type 1) threshold")
@click.option("--v-th-backward", type=float, default=None, help="BSD backward (Type 2) threshold")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None, help="BSD: linear warm-up steps")
@click.option("--sizes", default=None, help="MLP layer sizes, e.g. 784,1024,1024,512,256,10")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="run directory")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads for training")
@click.option("--teacher", type=click.Path(), default=None, help="MSKD: teacher checkpoint or logits file")
@click.option("--width", type=float, default=None, help="ResNet width multiplier")
@click.option("--alpha", type=float, default=None, help="MSKD: KD weight (eq. 11)")
@click.option("--temperature", type=float, default=None, help="MSKD: KD temperature tau")
@click.option("--beta", type=float, default=None, help="MSKD: reconstruction weight")
@click.option("--heads", type=click.IntRange(min=0), default=None, help="MSKD: number of auxiliary heads")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="ResNets: optimizer")
@click.option("--resume", is_flag=True, help="MSKD: continue from OUT/model.pt")
@click.option("--quiet", is_flag=True, help="no progress bars")
def train(out_dir, quiet, sizes, threads, **options):
    """Train a spiking network; writes OUT/model.pt and OUT/metrics.json."""
    method, model = options["method"], options["model"]
    if method in RESNET_METHODS[1:] or (method == "ann" and model not in BSD_MODELS):
        return _train_resnet(out_dir, quiet, threads, options)
    for key in ("teacher", "alpha", "temperature", "beta", "heads", "optimizer"):
        if options.pop(key) is not None:
            raise click.UsageError(f"--{key} applies to the ResNet methods ({', '.join(RESNET_METHODS)})")
    if options.pop("resume"):
        raise click.UsageError("--resume applies to the ResNet methods")
    from snncc.training.train import ConfigError, TrainConfig, train as run_training
    if sizes is not None:
        try:
            options["sizes"] = tuple(int(n) for n in sizes.split(","))
        except ValueError:
            raise ConfigError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    cfg = TrainConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    metrics = run_training(cfg, out_dir, progress=not quiet, threads=threads)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f} -> {os.path.join(out_dir, 'model.pt')}")


def _train_resnet(out_dir, quiet, threads, options):
    """The MSKD paper's methods on the ResNet families (snncc.training.mskd)."""
    import torch

    from snncc.training.mskd import MSKDConfig, train_mskd
    resume = options.pop("resume")
    for key in ("interlayer_loss", "lam", "v_th", "v_th_backward", "warmup_steps"):
        if options.pop(key) is not None:
            raise click.UsageError(f"--{key.replace('_', '-')} does not apply to --method {options['method']}")
    renames = {"temperature": "tau"}
    fields = {renames.get(k, k): v for k, v in options.items() if v is not None}
    if fields.get("model") in BSD_MODELS:
        raise click.UsageError(f"--method {fields['method']} trains ResNets: pass --model "
                               f"{{spike,sew,ms}}-resnet{{18,34,50,101}}")
    cfg = MSKDConfig(**fields)
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    metrics = train_mskd(cfg, out_dir, progress=not quiet, resume=resume)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f} -> {os.path.join(out_dir, 'model.pt')}")


def _checkpoint_format(path):
    import torch

    from snncc.training.train import CheckpointError
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # noqa: BLE001 -- any unpickling failure means a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    return obj.get("format") if isinstance(obj, dict) else None


def export_checkpoint(path, timesteps=None):
    """Rebuild a snncc checkpoint's deployable (feedforward / student) path and export it."""
    import torch

    from snncc.training import mskd
    if _checkpoint_format(path) == mskd.CHECKPOINT_FORMAT:
        if timesteps:
            raise click.UsageError("--timesteps cannot change a ResNet's T at export (BN statistics depend on it)")
        return mskd.export_mskd_checkpoint(path)

    from snncc.data.datasets import dataset_info
    from snncc.exporter import export
    from snncc.training.train import load_checkpoint
    model, cfg = load_checkpoint(path)
    info = dataset_info(cfg.dataset)
    t = timesteps or cfg.timesteps
    meta = {"dataset": cfg.dataset, "method": cfg.method, "model": cfg.model, "timesteps": t,
            "num_classes": info.num_classes, "source": os.path.basename(str(path))}
    return export(model.forward_path, torch.zeros(t, 1, *info.input_shape), timesteps=t,
                  name=f"{cfg.method}-{cfg.model}-{cfg.dataset}", metadata=meta)


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True, help="spike graph file (.snn.onnx)")
@_TIMESTEPS
def export_cmd(checkpoint, output, timesteps):
    """Export a trained checkpoint's deployable network to a spike-graph file."""
    from snncc.ir.serialize import save
    graph = export_checkpoint(checkpoint, timesteps)
    save(graph, output)
    click.echo(f"exported {len(graph)} nodes ({len(graph.populations())} populations) -> {output}")


# -- validate / inspect -------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def validate(model, as_json):
    """Check that MODEL is fully spiking; exit 1 naming each node that makes it hybrid."""
    from snncc.passes.validate import check_fully_spiking
    report = check_fully_spiking(_load_graph(model))
    if as_json:
        _emit_json(report.as_dict())
    else:
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.fully_spiking:
            click.echo("fully spiking")
        for v in report.violations:
            click.echo(f"hybrid: {v}")
    sys.exit(0 if report.fully_spiking else EXIT_HYBRID)


@main.command()
@click.argument("model", type=click.Path())
def inspect(model):
    """Print the graph: nodes, inputs, value kinds and shapes."""
    graph = _load_graph(model)
    click.echo(graph.summary())
    if graph.metadata:
        click.echo(f"metadata: {json.dumps(graph.metadata)}")


# -- run / energy -------------------------------------------------------------------
def _backend_options(model, backend) -> dict:
    """A Lava artifact compiled with --fixed-point runs in fixed point."""
    if backend == "lava" and _artifact_target(model) == "lava":
        from snncc.backends.lava_backend import load_artifact
        return {"fixed_point": load_artifact(model)[1].get("precision") == "fixed_pt"}
    return {}


def _evaluate(model, backend, dataset, data_dir, limit, timesteps, progress=True):
    from snncc.evaluate import default_timesteps, evaluate
    from snncc.runtime import get_backend
    graph = _load_graph(model)
    get_backend(backend)  # unknown names fail before any data is read
    t = default_timesteps(graph, timesteps)
    x, y = _test_data(_dataset_for(graph, dataset), data_dir, limit)
    options = _backend_options(model, backend)
    res = evaluate(graph, backend, x, y, t, progress=progress, options=options)
    if backend == "lava":
        res["precision"] = "fixed_pt" if options.get("fixed_point") else "floating_pt"
    return graph, res


@main.command()
@click.argument("model", type=click.Path())
@click.option("--backend", default=None, help="torch, numba or lava (default: the compiled target, else numba)")
@_DATASET
@_DATA_DIR
@_LIMIT
@_TIMESTEPS
@click.option("--json", "as_json", is_flag=True)
def run(model, backend, dataset, data_dir, limit, timesteps, as_json):
    """Simulate MODEL (a .snn.onnx file or a `snncc compile` directory) on a dataset's test split."""
    backend = backend or _artifact_target(model) or "numba"
    _, res = _evaluate(model, backend, dataset, data_dir, limit, timesteps, progress=not as_json)
    res.pop("activity")
    if as_json:
        _emit_json(res)
        return
    click.echo(f"backend {res['backend']}: accuracy {res['accuracy']:.4f} on {res['samples']} samples, "
               f"T={res['timesteps']}")
    for layer in res["layers"]:
        rate = layer["spikes"] / (layer["neurons"] * res["samples"] * res["timesteps"])
        click.echo(f"  {layer['name']:<20} {layer['neurons']:>8} neurons {layer['spikes']:>12} spikes  "
                   f"rate {rate:.4f}")


@main.group()
def energy():
    """Energy estimates from measured firing rates."""


@energy.command("report")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@_DATASET
@_DATA_DIR
@_LIMIT
@_TIMESTEPS
@click.option("--backend", default="numba", show_default=True)
@click.option("--first-layer", type=click.Choice(["once", "per-step"]), default="once", show_default=True,
              help="count the direct-encoded first layer's MACs once per inference or at every step")
@click.option("--compare", is_flag=True, help="several MODELS side by side (implied by more than one)")
@click.option("--png", "png_path", type=click.Path(), default=None, help="comparison figure (PNG)")
@click.option("--json", "json_path", type=click.Path(), default=None, help="also write the report as JSON to F")
def energy_report_cmd(models, dataset, data_dir, limit, timesteps, backend, first_layer, compare, png_path,
                      json_path):
    """Per-layer firing rate, SOPs, MACs and energy per inference, vs the same ANN.

    With several MODELS (e.g. Spike-, SEW- and MS-ResNet), a side-by-side comparison
    table, and with --png a figure of per-layer firing rates and energy."""
    from snncc.energy import EnergyModel, energy_report
    from snncc.passes.validate import check_fully_spiking
    from snncc.report import print_comparison, print_energy
    reports = []
    for model in models:
        graph, res = _evaluate(model, backend, dataset, data_dir, limit, timesteps)
        rep = energy_report(graph, res["activity"], res["samples"], res["timesteps"],
                            EnergyModel(first_layer=first_layer.replace("-", "_")))
        rep.update(accuracy=res["accuracy"], model=str(model), name=graph.name,
                   fully_spiking=check_fully_spiking(graph).fully_spiking)
        reports.append(rep)
    if len(reports) == 1 and not compare:
        print_energy(reports[0])
    else:
        print_comparison(reports)
    if png_path:
        from snncc.plots import plot_energy_comparison
        plot_energy_comparison(reports, png_path)
        click.echo(f"figure -> {png_path}")
    if json_path:
        _emit_json(reports[0] if len(reports) == 1 and not compare else {"models": reports}, json_path)


@main.command("compile")
@click.argument("model", type=click.Path())
@click.option("--target", type=click.Choice(["lava", "numba"]), required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(), required=True, help="artifact directory")
@click.option("--fixed-point", is_flag=True, help="Lava: Loihi bit-accurate fixed point (select_tag fixed_pt)")
def compile_cmd(model, target, out_dir, fixed_point):
    """Lower a fully spiking graph for a target; writes an artifact `snncc run` can load."""
    from snncc.passes.validate import check_fully_spiking
    graph = _load_graph(model)
    if target == "lava":
        from snncc.backends.lava_backend import compile_graph
        compile_graph(graph, out_dir, fixed_point=fixed_point)
    else:
        if fixed_point:
            raise click.UsageError("--fixed-point applies to --target lava")
        report = check_fully_spiking(graph)
        if not report.fully_spiking:
            raise click.UsageError(f"not fully spiking: {report.violations[0]}")
        from snncc.artifact import compile_artifact
        compile_artifact(graph, out_dir)
    click.echo(f"compiled for {target}{' (fixed point)' if fixed_point else ''} -> {out_dir}")
    summary = os.path.join(out_dir, "summary.txt")
    if os.path.isfile(summary):
        click.echo(open(summary).read().rstrip())


@main.command()
@click.argument("model", type=click.Path())
@_DATASET
@_DATA_DIR
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@_TIMESTEPS
@click.option("--input-bound", type=float, default=1.0, show_default=True, help="max |input| the scales must cover")
@click.option("--json", "json_path", type=click.Path(), default=None, help="also write the report as JSON to F")
def quantize(model, dataset, data_dir, limit, timesteps, input_bound, json_path):
    """Loihi fixed point: per-layer quantisation error, and accuracy of the fixed-point network vs the float one.

    The fixed-point run uses snncc's integer reference, which is bit-exact with Lava's fixed_pt models
    (tests/test_lava_fixed.py), so no Lava runtime is needed; the float run is the numba simulator."""
    import numpy as np

    from snncc.backends.lava_fixed import lower_fixed, run_integer
    from snncc.evaluate import default_timesteps
    from snncc.sims import numba_sim
    graph = _load_graph(model)
    t = default_timesteps(graph, timesteps)
    x, y = _test_data(_dataset_for(graph, dataset), data_dir, limit)
    plan = lower_fixed(graph, input_bound=input_bound)
    click.echo(plan.fixed.summary())
    flt = numba_sim.run(graph, x, t, record=True)
    fix = run_integer(graph, x, t, plan=plan, record=True, input_bound=input_bound)
    agree = {p: float((flt.trains[p] == fix.trains[p]).mean()) for p in graph.populations()}
    rep = {"samples": int(len(x)), "timesteps": t,
           "float_accuracy": float((flt.predictions() == y).mean()),
           "fixed_accuracy": float((fix.predictions() == y).mean()),
           "prediction_agreement": float((flt.predictions() == fix.predictions()).mean()),
           "spike_agreement": agree, "layers": plan.fixed.report}
    click.echo(f"accuracy on {len(x)} samples: float {rep['float_accuracy']:.4f}, fixed point "
               f"{rep['fixed_accuracy']:.4f}; predictions agree on {rep['prediction_agreement']:.2%}")
    for p, a in agree.items():
        click.echo(f"  spike agreement {p:<24} {a:.4f}")
    if json_path:
        _emit_json(json.loads(json.dumps(rep, default=lambda o: o.tolist() if isinstance(o, np.ndarray)
                                         else (o.item() if hasattr(o, "item") else str(o)))), json_path)


@main.group()
def bsd():
    """BSD extras: sequence models (RNN, eqs. 11-12) and the paper's analysis plots."""


@bsd.command("plots")
@click.argument("run_dir", type=click.Path())
def bsd_plots(run_dir):
    """Accuracy/loss curves, Type 1 vs Type 2 Hamming similarity (Fig. 3c), W-Theta alignment (Fig. 7)
    and firing rates per layer, from RUN_DIR/metrics.json, as PNGs in RUN_DIR."""
    from snncc.analysis.bsd_plots import plot_run
    for path in plot_run(run_dir):
        click.echo(str(path))


@bsd.command("train-seq")
@click.option("--task", type=click.Choice(["text", "timeseries"]), required=True)
@click.option("--data-path", type=click.Path(), default=None,
              help="text file / exchange_rate.txt.gz (default: the shared copies)")
@click.option("--seq-len", type=click.IntRange(min=1), default=None)
@click.option("--stride", type=click.IntRange(min=1), default=None)
@click.option("--hidden", type=click.IntRange(min=1), default=None)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--v-th", type=float, default=None)
@click.option("--lam", type=float, default=None)
@click.option("--interlayer-loss", type=click.Choice(["reco", "mse", "infonce"]), default=None)
@click.option("--train-samples", type=click.IntRange(min=1), default=None)
@click.option("--test-samples", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--out", "out_dir", type=click.Path(), required=True)
@click.option("--quiet", is_flag=True)
def bsd_train_seq(out_dir, threads, quiet, **options):
    """BSD-RNN: next-character prediction (text) or next-step regression (timeseries)."""
    from snncc.training.bsd_seq import SeqConfig, train_seq
    cfg = SeqConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    metrics = train_seq(cfg, out_dir, progress=not quiet, threads=threads)
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    click.echo(f"{json.dumps(shown)} -> {os.path.join(out_dir, 'model.pt')}")


@bsd.command("train-ae")
@click.option("--method", type=click.Choice(["bsd", "bp"]), default="bsd", show_default=True)
@click.option("--dataset", default=None, help="digits, mnist or fashion-mnist")
@_DATA_DIR
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--timesteps", type=click.IntRange(min=1), default=None)
@click.option("--width", type=float, default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--v-th", type=float, default=None)
@click.option("--freq-cutoff-ratio", type=float, default=None)
@click.option("--lam-low", type=float, default=None)
@click.option("--lam-high", type=float, default=None)
@click.option("--train-samples", type=click.IntRange(min=1), default=None)
@click.option("--test-samples", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--top-bn", is_flag=True, default=None, help="batch norm on the output layer too (the paper's setting)")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--out", "out_dir", type=click.Path(), required=True)
@click.option("--quiet", is_flag=True)
def bsd_train_ae(out_dir, threads, quiet, **options):
    """BSD conv autoencoder (App. E.2.4) or its BP baseline; writes reconstructions.png."""
    from snncc.training.bsd_ae import AEConfig, train_ae
    cfg = AEConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    metrics = train_ae(cfg, out_dir, progress=not quiet, threads=threads)
    shown = {k: round(v, 5) for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"{json.dumps(shown)} -> {out_dir}")


@bsd.command("export-rnn")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True)
def bsd_export_rnn(checkpoint, output):
    """Export a BSD-RNN's feedforward path (recurrent synapse as a delayed edge) to a spike graph."""
    from snncc.ir.serialize import save
    from snncc.training.bsd_rnn import export_rnn
    from snncc.training.bsd_seq import load_seq_checkpoint
    model, cfg, _ = load_seq_checkpoint(checkpoint)
    graph = export_rnn(model, cfg.seq_len)
    save(graph, output)
    click.echo(f"exported {len(graph)} nodes -> {output}")


@main.group()
def analyze():
    """Analyses that write figures."""


@analyze.command("infoflow")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@_DATA_DIR
@click.option("--limit", type=click.IntRange(min=8), default=512, show_default=True, help="samples per split")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="decoder training steps")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="folder for the PNGs and JSON")
def analyze_infoflow(checkpoints, data_dir, limit, steps, out_dir):
    """Per-block firing-rate heatmap (MSKD Fig. 4) and the I(X; Z_l) proxy across depth (Fig. 2)
    for ResNet checkpoints (e.g. direct vs MSKD), labelled by their run folder names."""
    import torch

    from snncc.analysis import infoflow
    from snncc.data.datasets import load_split
    from snncc.training.mskd import load_mskd_checkpoint
    rates, flows = {}, {}
    for path in checkpoints:
        model, cfg = load_mskd_checkpoint(path)
        label = f"{os.path.basename(os.path.dirname(os.path.abspath(path)))} ({cfg.method})"
        x_tr, _ = load_split(cfg.dataset, "train", data_dir=data_dir or cfg.data_dir, limit=limit)
        x_te, _ = load_split(cfg.dataset, "test", data_dir=data_dir or cfg.data_dir, limit=limit)
        rates[label] = infoflow.block_firing_rates(model, torch.as_tensor(x_te)).mean(axis=1)
        flows[label] = infoflow.information_flow(model, torch.as_tensor(x_tr), torch.as_tensor(x_te), steps=steps)
    os.makedirs(out_dir, exist_ok=True)
    infoflow.plot_firing_rate_heatmap(rates, os.path.join(out_dir, "firing_rate_heatmap.png"))
    infoflow.plot_information_flow(flows, os.path.join(out_dir, "information_flow.png"))
    _emit_json({"firing_rates": {k: [float(v) for v in r] for k, r in rates.items()},
                "information_flow": {k: {kk: (vv.tolist() if hasattr(vv, "tolist") else vv) for kk, vv in f.items()}
                                     for k, f in flows.items()}}, os.path.join(out_dir, "infoflow.json"))
    click.echo(f"wrote firing_rate_heatmap.png, information_flow.png, infoflow.json -> {out_dir}")


# -- bench / demo ---------------------------------------------------------------------
@main.group()
def bench():
    """Benchmarks that time implementations side by side in one run."""


@bench.command("sim")
@click.option("--timesteps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--input-rate", type=click.FloatRange(0.0, 1.0), default=0.15, show_default=True)
@click.option("--no-lava", is_flag=True, help="skip the (slow) Lava simulation")
@click.option("--lava-ir", is_flag=True, help="also time the graph compiled from the IR on Lava (float and fixed)")
@click.option("--lava-ir-timesteps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_sim(timesteps, input_rate, no_lava, lava_ir, lava_ir_timesteps, as_json):
    """numba vs torch vs Lava on a 784-1024-1024-10 LIF MLP, batch 1."""
    from snncc.bench.sim_bench import run_bench
    res = run_bench(timesteps=timesteps, input_rate=input_rate, with_lava=not no_lava, with_lava_ir=lava_ir,
                    lava_ir_timesteps=lava_ir_timesteps)
    _emit_result(res, as_json)


@bench.command("train")
@click.option("--model", type=click.Choice(["mlp", "cnn"]), default="mlp", show_default=True)
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True)
def bench_train_cmd(model, dataset, batch_size, steps, threads, as_json):
    """One BSD training step vs one BPTT step, same architecture and batch, interleaved in one run."""
    from snncc.bench.train_bench import bench_train
    res = bench_train(model=model, dataset=dataset, batch_size=batch_size, steps=steps, threads=threads)
    _emit_result(res, as_json)


@bench.command("mskd")
@click.option("--model", default="spike-resnet18", show_default=True)
@click.option("--width", type=float, default=0.25, show_default=True)
@click.option("--timesteps", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_mskd_cmd(model, width, timesteps, batch_size, steps, as_json):
    """Per-step time and memory of direct vs vanilla KD vs MSKD on one student, interleaved in one run."""
    from snncc.bench.mskd_bench import bench_mskd
    res = bench_mskd(model=model, width=width, timesteps=timesteps, batch_size=batch_size, steps=steps)
    _emit_result(res, as_json)


@bench.command("compile")
@click.option("--width", type=float, default=1.0, show_default=True, help="channel width multiplier")
@click.option("--fixed-point", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def bench_compile_cmd(width, fixed_point, as_json):
    """Time `compile --target lava` of a ResNet-18-sized fully spiking graph (Lava runtime start excluded)."""
    from snncc.bench.compile_bench import bench_compile
    res = bench_compile(width=width, fixed_point=fixed_point)
    _emit_result(res, as_json)


@main.command()
@click.option("--out", "out_dir", type=click.Path(), default="runs/demo", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
def demo(out_dir, epochs):
    """Train a small BSD MLP on digits, export, validate, simulate (numba + torch), energy."""
    from snncc.demo import run_demo
    run_demo(out_dir, epochs=epochs)


if __name__ == "__main__":  # pragma: no cover
    main()

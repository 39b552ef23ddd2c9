"""Training and export commands: train, export, bsd (sequence models, autoencoder, plots)."""
from __future__ import annotations

import json
import os

import click

from snncc import fileio
from snncc.cli.common import DATA_DIR_OPTION, FORCE_OPTION, TIMESTEPS_OPTION, MAX_TIMESTEPS


# -- train / export -------------------------------------------------------------
_RECIPE = click.option("--recipe", type=click.Choice(["cpu", "paper"]), default="cpu", show_default=True,
                       help="defaults for the options not given (lr, epochs, batch size, schedule, warm-up, "
                            "augmentation, thresholds): cpu = tuned for CPU budgets, paper = the papers' protocols "
                            "(snncc/training/recipes.py); recorded in metrics.json and the checkpoint")
_RESUME = click.option("--resume", is_flag=True,
                       help="continue from OUT/model.pt after its last completed epoch (same options; --epochs may "
                            "grow); the result is bit-identical to an uninterrupted run on the same machine")
IMAGE_MODELS = ("mlp", "cnn")
# options of the ResNet trainer only
RESNET_ONLY = ("teacher", "alpha", "kd_temperature", "kd_scaling", "recon_loss", "beta", "heads", "optimizer",
               "lif_form")


def _model_kind(model: str) -> str:
    """``--model`` -> the registry's model kind (mlp, cnn or resnet); ModelError for an unknown name."""
    if model in IMAGE_MODELS:
        return model
    if model in ("rnn", "autoencoder"):
        raise click.UsageError(f"--model {model} trains with 'snncc bsd train-{'seq' if model == 'rnn' else 'ae'}'")
    from snncc.models.resnet import parse_name
    parse_name(model)
    return "resnet"


@click.command()
@click.option("--method", required=True,
              help="bsd/bptt/ann on mlp/cnn (BSD paper); ann/direct/kd/mskd/mskd-norecon on ResNets (MSKD paper): "
                   "the pairs of snncc/training/registry.py")
@click.option("--model", default="mlp", show_default=True,
              help="mlp, cnn, or {spike,sew,ms}-resnet{18,34,50,101} / resnet{18,...} (ANN teacher)")
@click.option("--dataset", default="digits", show_default=True,
              help="digits, mnist, fashion-mnist, cifar10, cifar100, or mnist-N / fashion-mnist-N (zero-padded "
                   "to N x N, N even 30..224, e.g. fashion-mnist-32)")
@DATA_DIR_OPTION
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@TIMESTEPS_OPTION
@click.option("--train-samples", type=click.IntRange(min=1), default=None, help="subsample the training set")
@click.option("--test-samples", type=click.IntRange(min=1), default=None, help="subsample the test set")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--lam", type=float, default=None, help="ReCo penalty weight (BSD)")
@click.option("--interlayer-loss", type=click.Choice(["reco", "mse", "infonce"]), default=None)
@click.option("--top-loss", type=click.Choice(["ce", "firing"]), default=None,
              help="BSD top layer: ce (the paper's cross-entropy on the currents) or firing (snncc's: a logistic "
                   "loss per class that puts the label's current above the firing level and the others below "
                   "it, the spike readout's condition) [default: ce]")
@click.option("--reco-pairs", type=click.Choice(["all", "distinct-labels", "same-label-positive"]), default=None,
              help="BSD ReCo (eq. 7) pairs: all (the paper: every other sample repelled, also those with the same "
                   "label), distinct-labels (same-label pairs ignored) or same-label-positive (same-label pairs "
                   "attracted; snncc's variant) [default: the recipe's: cpu same-label-positive, paper all]")
@click.option("--reco-same-weight", type=float, default=None,
              help="BSD ReCo with --reco-pairs all: the weight w >= 0 of the same-label pairs' repulsion (1: eq. 7 as "
                   "written, 0: the same as distinct-labels; snncc's variant) [default: 1]")
@click.option("--v-th", type=float, default=None, help="feedforward (Type 1) threshold")
@click.option("--v-th-backward", type=float, default=None, help="BSD backward (Type 2) threshold")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None, help="BSD: linear warm-up steps")
@click.option("--sizes", default=None, help="MLP layer sizes, e.g. 784,1024,1024,512,256,10")
@click.option("--augment", default=None,
              help="training-batch augmentation: randaugment or none [default: the recipe's: cpu none, paper "
                   "randaugment on mnist/fashion-mnist/cifar, none on digits]")
@click.option("--ra-n", type=int, default=None, help="RandAugment: ops per image, 1..10 [default: 2]")
@click.option("--ra-m", type=int, default=None,
              help="RandAugment: magnitude bin 0..30 [default: 9 for the mlp, 4 for the cnn (App. E.2.2)]")
@click.option("--normalize/--no-normalize", default=None,
              help="CNN: per-channel input normalisation with the training split's statistics, part of the "
                   "exported graph [default: on for the cnn (App. E.2.2)]")
@click.option("--init-gain", type=float, default=None,
              help="mlp/cnn: multiply every weight layer's default initialisation by this gain (wakes the deep "
                   "layers at init) [default: 1]")
@click.option("--population", type=int, default=None,
              help="BSD mlp/cnn: output neurons per class; the label code gives each class P ones, the readout "
                   "sums each class's P counts (snncc's option; 1 = the paper's one-hot) [default: 1]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="run directory")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads for training")
@click.option("--teacher", type=click.Path(), default=None,
              help="MSKD: teacher checkpoint, logits file, or dinov2:DIR (a local DINOv2 model directory)")
@click.option("--width", type=float, default=None, help="ResNet width multiplier")
@click.option("--alpha", type=float, default=None, help="MSKD: KD weight (eq. 11)")
@click.option("--kd-temperature", type=float, default=None, help="KD / MSKD: the KD temperature of eq. 9 [default: 5]")
@click.option("--kd-scaling", type=click.Choice(["paper", "hinton"]), default=None,
              help="KD / MSKD: paper = eq. 11 as written (the KL itself), hinton = KL x kd_temperature^2 "
                   "[default: paper]")
@click.option("--recon-loss", type=click.Choice(["sum", "mean"]), default=None,
              help="MSKD: L_r = mean (the mean-squared error the paper names, per element) or sum (its "
                   "formula read literally: squared norm per sample, batch-averaged) [default: mean]")
@click.option("--beta", type=float, default=None, help="MSKD: reconstruction weight")
@click.option("--heads", type=click.IntRange(min=0), default=None, help="MSKD: number of auxiliary heads")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="ResNets: optimizer")
@click.option("--lif-form", type=click.Choice(["paper", "bsd"]), default=None,
              help="ResNet students' LIF: paper = MSKD eq. 1, u = 0.2 u (1 - z) + W z + b (the input not scaled; "
                   "spikingjelly decay_input=False), bsd = BSD eq. 2 (input x 1/tau, tau 2); threshold 0.5 "
                   "[default: paper]")
@_RECIPE
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default=None,
              help="mlp/cnn: learning-rate schedule after the warm-up [default: the recipe's]")
@_RESUME
@click.option("--quiet", is_flag=True, help="no progress bars")
@FORCE_OPTION
def train(out_dir, quiet, sizes, threads, force, **options):
    """Train a spiking network; writes OUT/model.pt and OUT/metrics.json."""
    from snncc.training.registry import lookup, method_names
    kind = _model_kind(options["model"])
    lookup(options["method"], kind)  # a pair the registry does not list: one line naming the supported ones
    if kind == "resnet":
        return _train_resnet(out_dir, quiet, threads, options, force)
    for key in RESNET_ONLY:
        if options.pop(key) is not None:
            raise click.UsageError(f"--{key.replace('_', '-')} applies to the ResNet methods "
                                   f"({', '.join(method_names('resnet'))})")
    resume = options.pop("resume")
    from snncc.training.train import ConfigError, TrainConfig, train as run_training
    if sizes is not None:
        try:
            options["sizes"] = tuple(int(n) for n in sizes.split(","))
        except ValueError:
            raise ConfigError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    cfg = TrainConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    with fileio.output_dir(out_dir, "run", force):
        metrics = run_training(cfg, out_dir, progress=not quiet, threads=threads, resume=resume)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f} -> {os.path.join(out_dir, 'model.pt')}")


def _train_resnet(out_dir, quiet, threads, options, force=False):
    """The MSKD paper's methods on the ResNet families (snncc.training.mskd)."""
    import torch

    from snncc.training.mskd import MSKDConfig, train_mskd
    resume = options.pop("resume")
    for key in ("interlayer_loss", "top_loss", "reco_pairs", "reco_same_weight", "lam", "v_th", "v_th_backward", "warmup_steps", "augment",
                "ra_n", "ra_m", "normalize", "schedule", "init_gain", "population"):
        if options.pop(key) is not None:
            raise click.UsageError(f"--{key.replace('_', '-')} does not apply to --method {options['method']}")
    fields = {k: v for k, v in options.items() if v is not None}
    cfg = MSKDConfig(**fields)
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    with fileio.output_dir(out_dir, "run", force):
        metrics = train_mskd(cfg, out_dir, progress=not quiet, resume=resume)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f} -> {os.path.join(out_dir, 'model.pt')}")


def _checkpoint_format(path):
    from snncc.training.checkpoint import safe_load
    obj = safe_load(path)
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
    from snncc.export import export
    from snncc.training.train import load_checkpoint
    model, cfg = load_checkpoint(path)
    info = dataset_info(cfg.dataset)
    t = timesteps or cfg.timesteps
    meta = {"dataset": cfg.dataset, "method": cfg.method, "model": cfg.model, "timesteps": t,
            "num_classes": info.num_classes, "source": os.path.basename(str(path))}
    return export(model.forward_path, torch.zeros(t, 1, *info.input_shape), timesteps=t,
                  name=f"{cfg.method}-{cfg.model}-{cfg.dataset}", metadata=meta, population=cfg.population)


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True, help="spike graph file (.snn.onnx)")
@TIMESTEPS_OPTION
@click.option("--format", "fmt", type=click.Choice(["snn", "nir"]), default="snn", show_default=True,
              help="snn: a spike graph (.snn.onnx); nir: a NIR file (CHECKPOINT may then also be a .snn.onnx)")
@click.option("--dt", type=float, default=None, help="--format nir: the step in seconds written to NIR [default: 1e-4]")
@FORCE_OPTION
def export_cmd(checkpoint, output, timesteps, fmt, dt, force):
    """Export a trained checkpoint's deployable network to a spike-graph (or NIR) file."""
    from snncc.ir.serialize import save
    if fmt == "nir":
        from snncc.cli.cmd_nir import export_nir
        fileio.check_output(output, "nir", force)
        if checkpoint.endswith(".onnx") or os.path.isdir(checkpoint):
            return export_nir(checkpoint, output, dt, force=force)
        return export_nir(checkpoint, output, dt, graph=export_checkpoint(checkpoint, timesteps), force=force)
    if dt is not None:
        raise click.UsageError("--dt applies to --format nir")
    fileio.check_output(output, "graph", force)
    graph = export_checkpoint(checkpoint, timesteps)
    save(graph, output, force=force)
    click.echo(f"exported {len(graph)} nodes ({len(graph.populations())} populations) -> {output}")



@click.group()
def bsd():
    """BSD extras: sequence models (RNN, eqs. 11-12) and the paper's analysis plots."""


@bsd.command("plots")
@click.argument("run_dir", type=click.Path())
@FORCE_OPTION
def bsd_plots(run_dir, force):
    """Accuracy/loss curves, Type 1 vs Type 2 Hamming similarity (Fig. 3c), W-Theta alignment (Fig. 7)
    and firing rates per layer, from RUN_DIR/metrics.json, as PNGs in RUN_DIR."""
    from snncc.analysis.bsd_plots import plot_run
    for path in plot_run(run_dir, force):
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
@click.option("--steps-per-element", type=click.IntRange(min=1), default=None,
              help="LIF steps per sequence element [default: the recipe's: paper 4 (App. E.2.3), cpu 1]")
@click.option("--train-samples", type=click.IntRange(min=1), default=None)
@click.option("--test-samples", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--out", "out_dir", type=click.Path(), required=True)
@_RECIPE
@_RESUME
@click.option("--quiet", is_flag=True)
@FORCE_OPTION
def bsd_train_seq(out_dir, threads, quiet, resume, force, **options):
    """BSD-RNN: next-character prediction (text) or next-step regression (timeseries)."""
    from snncc.training.bsd_seq import SeqConfig, train_seq
    cfg = SeqConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    with fileio.output_dir(out_dir, "run", force):
        metrics = train_seq(cfg, out_dir, progress=not quiet, threads=threads, resume=resume)
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    click.echo(f"{json.dumps(shown)} -> {os.path.join(out_dir, 'model.pt')}")


@bsd.command("train-ae")
@click.option("--method", type=click.Choice(["bsd", "bp"]), default="bsd", show_default=True)
@click.option("--dataset", default=None, help="digits, mnist or fashion-mnist")
@DATA_DIR_OPTION
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=None)
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
@_RECIPE
@_RESUME
@click.option("--quiet", is_flag=True)
@FORCE_OPTION
def bsd_train_ae(out_dir, threads, quiet, resume, force, **options):
    """BSD conv autoencoder (App. E.2.4) or its BP baseline; writes reconstructions.png."""
    from snncc.training.bsd_ae import AEConfig, train_ae
    cfg = AEConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.validate()
    with fileio.output_dir(out_dir, "run", force):
        metrics = train_ae(cfg, out_dir, progress=not quiet, threads=threads, resume=resume)
    shown = {k: round(v, 5) for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"{json.dumps(shown)} -> {out_dir}")


@bsd.command("export-rnn")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True)
@FORCE_OPTION
def bsd_export_rnn(checkpoint, output, force):
    """Export a BSD-RNN's feedforward path (recurrent synapse as a delayed edge) to a spike graph."""
    from snncc.ir.serialize import save
    from snncc.export import export_rnn
    from snncc.training.bsd_seq import load_seq_checkpoint
    fileio.check_output(output, "graph", force)
    model, cfg, _ = load_seq_checkpoint(checkpoint)
    graph = export_rnn(model, cfg.seq_len)
    save(graph, output, force=force)
    click.echo(f"exported {len(graph)} nodes -> {output}")


COMMANDS = (train, export_cmd, bsd,)

"""Benchmarks (timed side by side in one run) and the demo."""
from __future__ import annotations

import sys

import click

from snncc.cli.common import emit_json, emit_result, FORCE_OPTION, MAX_TIMESTEPS


# -- bench / demo ---------------------------------------------------------------------
@click.group()
def bench():
    """Benchmarks that time implementations side by side in one run."""


class _ListOf(click.ParamType):
    """A comma-separated list of values, each checked by ``convert(text)`` (ValueError: refused)."""

    name = "list"

    def __init__(self, convert, choices=None):
        self.convert_one, self.choices = convert, choices

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(self.convert_one(v.strip()) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        bad = [v for v in out if self.choices is not None and v not in self.choices]
        if bad or not out:
            self.fail(f"{value!r}: choose from {', '.join(map(str, self.choices))}", param, ctx)
        return out


def _positive_int(text):
    v = int(text)
    if not 1 <= v <= MAX_TIMESTEPS:
        raise ValueError(text)
    return v


def _rate(text):
    v = float(text)
    if not 0.0 < v < 1.0:
        raise ValueError(text)
    return v


@bench.command("sim")
@click.option("--timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=200, show_default=True)
@click.option("--input-rate", type=click.FloatRange(0.0, 1.0), default=0.15, show_default=True)
@click.option("--no-lava", is_flag=True, help="skip the (slow) Lava simulation")
@click.option("--lava-ir", is_flag=True, help="also time the graph compiled from the IR on Lava (float and fixed)")
@click.option("--lava-ir-timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=50, show_default=True)
@click.option("--matrix", is_flag=True, help="the workload matrix: numba vs dense float32 torch (and Lava), "
              "spike agreement checked in every cell")
@click.option("--quick", is_flag=True, help="--matrix: the subset that fits a few minutes on 2 cores (default cells)")
@click.option("--models", type=_ListOf(str, ("mlp", "resnet18-0.5", "resnet18-1")), default=None,
              help="--matrix: models (mlp, resnet18-0.5, resnet18-1)")
@click.option("--batches", type=_ListOf(_positive_int), default=None, help="--matrix: batch sizes, e.g. 1,16,256")
@click.option("--steps", "steps_list", type=_ListOf(_positive_int), default=None,
              help="--matrix: T values, e.g. 4,8,200")
@click.option("--inputs", type=_ListOf(str, ("direct", "spike")), default=None, help="--matrix: direct,spike")
@click.option("--rates", type=_ListOf(_rate), default=None, help="--matrix: firing rates, e.g. 0.02,0.1,0.25")
@click.option("--repeats", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="--matrix: timed runs per side and cell (the minimum is reported)")
@click.option("--full", is_flag=True, help="--matrix: every cell of the issue's matrix (hours on 2 cores)")
@click.option("--json", "as_json", is_flag=True)
def bench_sim(timesteps, input_rate, no_lava, lava_ir, lava_ir_timesteps, matrix, quick, models, batches, steps_list,
              inputs, rates, repeats, full, as_json):
    """numba vs torch vs Lava on a 784-1024-1024-10 LIF MLP, batch 1; with --matrix, the workload matrix."""
    if not matrix:
        from snncc.bench.sim_bench import run_bench
        res = run_bench(timesteps=timesteps, input_rate=input_rate, with_lava=not no_lava, with_lava_ir=lava_ir,
                        lava_ir_timesteps=lava_ir_timesteps)
        emit_result(res, as_json)
        return
    from snncc.bench.sim_matrix import FULL, QUICK, format_cell, run_matrix
    if quick and full:
        raise click.UsageError("--quick and --full are alternatives")
    base = FULL if full else QUICK
    pick = {"models": models or base["models"], "batches": batches or base["batches"],
            "timesteps": steps_list or base["timesteps"], "inputs": inputs or base["inputs"],
            "rates": rates or base["rates"]}
    res = run_matrix(**pick, repeats=repeats, lava=not no_lava,
                     progress=lambda cell: click.echo(format_cell(cell), err=as_json))
    lists = {"models": "models", "batches": "batches", "timesteps": "steps", "inputs": "inputs", "rates": "rates"}
    res["command"] = ("snncc bench sim --matrix " + " ".join(f"--{flag} {','.join(map(str, pick[k]))}"
                                                             for k, flag in lists.items())
                      + f" --repeats {repeats}" + (" --no-lava" if no_lava else "") + " --json")
    res["selection"] = {k: list(v) for k, v in pick.items()}
    if as_json:
        emit_json(res)
    else:
        click.echo(f"min numba/dense over {len(res['cells'])} cells: {res['min_numba_vs_dense']:.2f}x "
                   f"(load average {res['load_average_1min']:.1f})")


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
    emit_result(res, as_json)


@bench.command("mskd")
@click.option("--model", default="spike-resnet18", show_default=True)
@click.option("--width", type=float, default=0.25, show_default=True)
@click.option("--timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's)")
@click.option("--json", "as_json", is_flag=True)
def bench_mskd_cmd(model, width, timesteps, batch_size, steps, threads, as_json):
    """Per-step time and memory of direct vs vanilla KD vs MSKD on one student, interleaved in one run."""
    from snncc.bench.mskd_bench import bench_mskd
    res = bench_mskd(model=model, width=width, timesteps=timesteps, batch_size=batch_size, steps=steps,
                     threads=threads)
    emit_result(res, as_json)


@bench.command("compile")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="channel width multiplier (> 0)")
@click.option("--fixed-point", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def bench_compile_cmd(width, fixed_point, as_json):
    """Time `compile --target lava` of a ResNet-18-sized fully spiking graph (Lava runtime start excluded)."""
    from snncc.bench.compile_bench import bench_compile
    res = bench_compile(width=width, fixed_point=fixed_point)
    emit_result(res, as_json)


@click.command()
@click.option("--out", "out_dir", type=click.Path(), default="runs/demo", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@FORCE_OPTION
def demo(out_dir, epochs, force):
    """Train a small BSD MLP on digits, export, validate, simulate (numba + torch), energy."""
    from snncc import fileio
    from snncc.demo import DemoFailed, run_demo
    try:
        with fileio.output_dir(out_dir, "demo", force):
            run_demo(out_dir, epochs=epochs)
    except DemoFailed as e:  # a check the demo exists to make failed: say so, exit 1 (not a crash)
        click.echo(f"demo check failed: {e}", err=True)
        sys.exit(1)


COMMANDS = (bench, demo,)

"""Benchmarks (timed side by side in one run) and the demo."""
from __future__ import annotations

import sys

import click

from snncc.cli.common import emit_result, FORCE_OPTION, MAX_TIMESTEPS


# -- bench / demo ---------------------------------------------------------------------
@click.group()
def bench():
    """Benchmarks that time implementations side by side in one run."""


@bench.command("sim")
@click.option("--timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=200, show_default=True)
@click.option("--input-rate", type=click.FloatRange(0.0, 1.0), default=0.15, show_default=True)
@click.option("--no-lava", is_flag=True, help="skip the (slow) Lava simulation")
@click.option("--lava-ir", is_flag=True, help="also time the graph compiled from the IR on Lava (float and fixed)")
@click.option("--lava-ir-timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_sim(timesteps, input_rate, no_lava, lava_ir, lava_ir_timesteps, as_json):
    """numba vs torch vs Lava on a 784-1024-1024-10 LIF MLP, batch 1."""
    from snncc.bench.sim_bench import run_bench
    res = run_bench(timesteps=timesteps, input_rate=input_rate, with_lava=not no_lava, with_lava_ir=lava_ir,
                    lava_ir_timesteps=lava_ir_timesteps)
    emit_result(res, as_json)


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

"""Analysis commands that write figures."""
from __future__ import annotations

import os

import click

from snncc import fileio
from snncc.cli.common import DATA_DIR_OPTION, emit_json, FORCE_OPTION


@click.group()
def analyze():
    """Analyses that write figures."""


@analyze.command("infoflow")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@DATA_DIR_OPTION
@click.option("--limit", type=click.IntRange(min=8), default=512, show_default=True, help="samples per split")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="decoder training steps")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="folder for the PNGs and JSON")
@FORCE_OPTION
def analyze_infoflow(checkpoints, data_dir, limit, steps, out_dir, force):
    """Per-block firing-rate heatmap (MSKD Fig. 4) and the I(X; Z_l) proxy across depth (Fig. 2)
    for ResNet checkpoints (e.g. direct vs MSKD), labelled by their run folder names."""
    import torch

    fileio.check_output(out_dir, "analysis", force, is_dir=True)   # refuse before the work
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
    fileio.prepare_dir(out_dir, "analysis", force)
    infoflow.plot_firing_rate_heatmap(rates, os.path.join(out_dir, "firing_rate_heatmap.png"))
    infoflow.plot_information_flow(flows, os.path.join(out_dir, "information_flow.png"))
    emit_json({"firing_rates": {k: [float(v) for v in r] for k, r in rates.items()},
                "information_flow": {k: {kk: (vv.tolist() if hasattr(vv, "tolist") else vv) for kk, vv in f.items()}
                                     for k, f in flows.items()}}, os.path.join(out_dir, "infoflow.json"), force=True)
    click.echo(f"wrote firing_rate_heatmap.png, information_flow.png, infoflow.json -> {out_dir}")


COMMANDS = (analyze,)

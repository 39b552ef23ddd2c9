"""Firing rate per layer of an untrained BSD model at initialisation, for several --init-gain values.

    python scripts/init_firing.py [--dataset mnist] [--model mlp] [--recipe paper] [--samples 512] [--gains 1 2 3]

Builds the model exactly as `snncc train --method bsd` does (same seed, same recipe thresholds), runs one
combined pass of both paths on the first test images and prints the mean spike probability per neuron
per step of every Type 1 (s_i) and Type 2 (s'_i) layer.
"""
from __future__ import annotations

import argparse

import torch

from snncc.data.datasets import load_split
from snncc.training.methods.bsd import firing_rates, repeat_time
from snncc.training.train import TrainConfig, build_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    ap.add_argument("--recipe", default="paper", choices=("cpu", "paper"))
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    args = ap.parse_args(argv)
    x, y = load_split(args.dataset, "test", limit=args.samples, seed=args.seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    for gain in args.gains:
        cfg = TrainConfig(method="bsd", model=args.model, dataset=args.dataset, recipe=args.recipe, seed=args.seed,
                          init_gain=gain)
        torch.manual_seed(args.seed)
        model = build_model(cfg)
        if getattr(model, "input_normalizer", None) is not None:
            model.input_normalizer.set_stats(x.mean((0, 2, 3)), x.std((0, 2, 3)))
        with torch.no_grad():
            _, info = model.training_losses(repeat_time(x, model.timesteps), y)
        rates = firing_rates(info["spikes"])
        shown = "  ".join(f"{k} {100 * v:.1f}%" for k, v in rates.items())
        print(f"init_gain {gain:g}: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-layer probe of a trained BSD MLP (docs/methods.md, "What eq. 7 does with label targets").

For each hidden layer i = 2..L-1 of the feedforward path: the mean cosine of a test sample's voltage vector v_i (its
(T, D) currents flattened, as ReCo sees them) with its own label's apical target v'_i (the Type 2 path run on the
label code), the mean of its largest cosine with another label's target, and the accuracy of the nearest label
target (argmax of the cosine over the labels). Then the output layer: accuracy from the time-averaged currents (a
class's block of P neurons averaged, with --population P) and from the spike counts (the deployed readout).

    python scripts/bsd_layer_probe.py runs/NAME [runs/NAME2 ...] [--samples 1024]
"""
from __future__ import annotations

import argparse
import os

import torch

from snncc.data.datasets import load_split
from snncc.models.mlp import run_forward_path
from snncc.training.methods.bsd import affinity, cosine_predict, repeat_time
from snncc.training.train import load_checkpoint


@torch.no_grad()
def probe(run_dir: str, samples: int) -> dict:
    model, cfg = load_checkpoint(os.path.join(run_dir, "model.pt"))
    x, y = load_split(cfg.dataset, "test", cfg.data_dir, samples, cfg.seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    v, s = run_forward_path(model.forward_path, repeat_time(x, model.timesteps), detach=True)
    pop = model.population
    labels = torch.arange(model.sizes[-1] // pop)
    _, targets, _ = model.label_path(labels)  # one row per label, in label order
    rows = {}
    for i in range(2, model.num_layers):
        c = affinity(v[i - 1], targets[i])  # (B, labels)
        own = c.gather(1, y[:, None])[:, 0]
        other = c.masked_fill(torch.nn.functional.one_hot(y, len(labels)).bool(), -2.0).max(1).values
        rows[f"layer {i}"] = (float(own.mean()), float(other.mean()), float((c.argmax(1) == y).float().mean()))
    block_means = v[-1].mean(0).reshape(len(y), len(labels), pop).mean(2)  # a class's P neurons (--population)
    currents = float((block_means.argmax(1) == y).float().mean())
    spikes = float((cosine_predict(s[-1].sum(0), pop) == y).float().mean())
    return {"layers": rows, "output currents": currents, "output spikes": spikes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=1024, help="first N test samples")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        r = probe(run, args.samples)
        print(run)
        for name, (own, other, acc) in r["layers"].items():
            print(f"  {name}: cos(own target) {own:.3f}  max cos(other) {other:+.3f}  nearest target {acc:.2%}")
        print(f"  output: currents {r['output currents']:.2%}  spikes {r['output spikes']:.2%}")


if __name__ == "__main__":
    main()

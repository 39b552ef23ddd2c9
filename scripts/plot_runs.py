"""Test accuracy against cumulative wall time for several `snncc train` runs, in one PNG.

    python scripts/plot_runs.py RUN_DIR[=LABEL] ... -o OUT.png [--target 0.95] [--budget-min 30] [--ymin 88]

Reads each RUN_DIR/metrics.json (per-epoch `test_accuracy` and `seconds`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR=LABEL")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace --out even if snncc did not write it")
    ap.add_argument("--target", type=float, default=None, help="horizontal line at this accuracy")
    ap.add_argument("--budget-min", type=float, default=None, help="vertical line at this many minutes")
    ap.add_argument("--ymin", type=float, default=None, help="lower end of the accuracy axis, in percent")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snncc.fileio import atomic_path
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in args.runs:
        run, _, label = spec.partition("=")
        try:
            hist = json.loads((Path(run) / "metrics.json").read_text())["history"]
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {run}: no readable metrics.json ({type(e).__name__})", file=sys.stderr)
            return 2
        t, minutes = 0.0, []
        for h in hist:
            t += h["seconds"] / 60
            minutes.append(t)
        ax.plot(minutes, [100 * h["test_accuracy"] for h in hist], marker="o", ms=3, label=label or run)
    if args.target is not None:
        ax.axhline(100 * args.target, color="grey", ls="--", lw=1)
    if args.budget_min is not None:
        ax.axvline(args.budget_min, color="grey", ls=":", lw=1)
    ax.set_xlabel("wall time (min, cumulative over epochs incl. evaluation)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(bottom=args.ymin if args.ymin is not None else max(0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(args.out, kind="png", force=args.force) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

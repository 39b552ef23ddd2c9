#!/usr/bin/env python3
"""What a user gets from `snncc train` with the default (CPU) recipe at short budgets.

Runs the CLI exactly as a user would (defaults otherwise), one case after the other, and prints one JSON
object per case: test accuracy, wall time, recipe, and the command. The targets (issue 10) are checked
and reported, not asserted: BSD MLP, full MNIST, 1 epoch >= 90 % in <= 5 min on 2 cores; 10k samples,
2 epochs >= 80 %.

    python scripts/bench_default_recipe.py --data-dir ../shared/data [--cases mnist-1ep,mnist-10k-2ep,digits]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    # name: (extra CLI args, (min accuracy, max seconds) or None)
    "mnist-1ep": (["--dataset", "mnist", "--epochs", "1"], (0.90, 300.0)),
    "mnist-10k-2ep": (["--dataset", "mnist", "--train-samples", "10000", "--epochs", "2"], (0.80, None)),
    "digits": (["--dataset", "digits"], None),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--method", default="bsd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snncc", default=str(Path(sys.executable).with_name("snncc")))
    args = ap.parse_args()
    failed = 0
    for name in args.cases.split(","):
        if name not in CASES:
            ap.error(f"unknown case {name!r} (choose from {', '.join(CASES)})")
        extra, target = CASES[name]
        out = Path(tempfile.mkdtemp(prefix=f"snncc-bench-{name}-")) / "run"
        cmd = [args.snncc, "train", "--method", args.method, *extra, "--seed", str(args.seed), "--out", str(out)]
        if "mnist" in extra:
            cmd += ["--data-dir", args.data_dir]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        row = {"case": name, "command": " ".join(cmd[1:]).replace(str(out), "OUT"), "exit": proc.returncode,
               "seconds": round(seconds, 1)}
        if proc.returncode == 0:
            metrics = json.loads((out / "metrics.json").read_text())
            row.update(test_accuracy=metrics["test_accuracy"], recipe=metrics.get("config", {}).get("recipe"))
            if target:
                acc_ok = metrics["test_accuracy"] >= target[0]
                time_ok = target[1] is None or seconds <= target[1]
                row["target"] = {"min_accuracy": target[0], "max_seconds": target[1], "met": acc_ok and time_ok}
                failed += not (acc_ok and time_ok)
        else:
            row["stderr"] = proc.stderr.strip().splitlines()[-1:] or [""]
            failed += 1
        print(json.dumps(row), flush=True)
        shutil.rmtree(out.parent, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

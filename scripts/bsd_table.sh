#!/usr/bin/env bash
# Reduced-scale version of the BSD paper's Table 1 (MLP rows) and Table 4 (inter-layer loss ablation) on
# MNIST and Fashion-MNIST (CPU): BSD vs BPTT on the same spiking MLP vs BP on the ANN of that MLP, and
# BSD with ReCo / InfoNCE / MSE, all with the paper's MLP [784,1024,1024,512,256,10], T = 4, batch 128.
# Every run uses the same budget: EPOCHS (default 3) epochs, lr LR (default 1e-3), no augmentation, seed 0,
# one torch thread; JOBS (default 2) runs at a time.
# Usage: scripts/bsd_table.sh OUT_DIR [DATA_DIR]   (results: OUT_DIR/summary.json, one line per run)
set -euo pipefail
OUT=${1:?usage: scripts/bsd_table.sh OUT_DIR [DATA_DIR]}
DATA=${2:-../shared/data}
COMMON="--data-dir $DATA --epochs ${EPOCHS:-3} --lr ${LR:-1e-3} --augment none --seed 0 --threads 1 --quiet"
runs=(
  "bsd-mnist --method bsd --dataset mnist"
  "bptt-mnist --method bptt --dataset mnist"
  "ann-mnist --method ann --dataset mnist"
  "bsd-infonce-mnist --method bsd --dataset mnist --interlayer-loss infonce"
  "bsd-mse-mnist --method bsd --dataset mnist --interlayer-loss mse"
  "bsd-fashion --method bsd --dataset fashion-mnist"
  "bptt-fashion --method bptt --dataset fashion-mnist"
  "ann-fashion --method ann --dataset fashion-mnist"
)
mkdir -p "$OUT"
for spec in "${runs[@]}"; do
  set -- $spec
  name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] && continue
  echo "snncc train $* $COMMON --out $OUT/$name"
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null'
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for run in sorted(p.parent for p in out.glob("*/metrics.json")):
    m = json.loads((run / "metrics.json").read_text())
    hist = m["history"]
    rows[run.name] = {"test_accuracy": m["test_accuracy"], "best_epoch_accuracy": max(h["test_accuracy"] for h in hist),
                      "train_accuracy": hist[-1]["train_accuracy"], "epochs": len(hist),
                      "minutes": round(sum(h["seconds"] for h in hist) / 60, 1)}
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for k, v in rows.items():
    print(f"{k:20s}", v)
PY

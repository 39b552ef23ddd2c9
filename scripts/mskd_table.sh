#!/usr/bin/env bash
# Reduced-scale version of the MSKD paper's Table 3 on MNIST (CPU): direct vs vanilla KD vs MSKD for
# Spike-, SEW- and MS-ResNet-18 and a deeper Spike-ResNet-34, with accuracy, firing rate and energy.
# Usage: scripts/mskd_table.sh OUT_DIR [DATA_DIR]   (results: OUT_DIR/summary.json, OUT_DIR/compare.png)
# KD_ARGS adds options: the table in docs/results.md §6 was measured before eq. 11 was taken as written and before
# the MSKD neuron, i.e. with KD_ARGS="--kd-scaling hinton --recon-loss mean --lif-form bsd".
set -euo pipefail
OUT=${1:?usage: scripts/mskd_table.sh OUT_DIR [DATA_DIR]}
DATA=${2:-../shared/data}
COMMON="--dataset mnist --data-dir $DATA --train-samples ${TRAIN:-4096} --test-samples ${TEST:-1000} \
  --epochs ${EPOCHS:-3} --width ${WIDTH:-0.25} --timesteps ${T:-2} --optimizer adamw --lr ${LR:-2e-3} --seed 0 --quiet ${KD_ARGS:-}"
[ -f "$OUT/teacher/model.pt" ] || snncc train --method ann --model resnet18 $COMMON --out "$OUT/teacher"
for model in spike-resnet18 sew-resnet18 ms-resnet18 spike-resnet34; do
  for method in direct kd mskd; do
    teacher=(); [ "$method" != direct ] && teacher=(--teacher "$OUT/teacher/model.pt")
    snncc train --method $method --model $model $COMMON "${teacher[@]}" --out "$OUT/$model-$method"
    snncc export "$OUT/$model-$method/model.pt" -o "$OUT/$model-$method/model.snn.onnx"
  done
done
for method in direct kd mskd; do
  snncc energy report "$OUT"/{spike,sew,ms}-resnet18-$method/model.snn.onnx "$OUT/spike-resnet34-$method/model.snn.onnx" \
    --data-dir "$DATA" --limit ${TEST:-1000} --png "$OUT/compare-$method.png" --json "$OUT/energy-$method.json" \
    > "$OUT/energy-$method.txt"
done
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = {}
for m in ("direct", "kd", "mskd"):
    for rep in json.loads((out / f"energy-{m}.json").read_text())["models"]:
        run = pathlib.Path(rep["model"]).parent.name
        acc = json.loads((out / run / "metrics.json").read_text())["test_accuracy"]
        rows[run] = {"module_test_accuracy": acc, "graph_accuracy": rep["accuracy"], "fully_spiking": rep["fully_spiking"],
                     "mean_firing_rate": rep["mean_firing_rate"], "energy_nj": rep["total_energy_pj"] / 1e3,
                     "ann_energy_nj": rep["ann_energy_pj"] / 1e3}
rows["teacher"] = {"module_test_accuracy": json.loads((out / "teacher/metrics.json").read_text())["test_accuracy"]}
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for k, v in rows.items():
    print(k, {a: (round(b, 4) if isinstance(b, float) else b) for a, b in v.items()})
PY

#!/usr/bin/env bash
# Reduced-scale version of the MSKD paper's Table 3 (CPU): direct vs vanilla KD vs MSKD for Spike-, SEW- and
# MS-ResNet-18 and a deeper Spike-ResNet-34, with accuracy, firing rate and energy per inference, plus the
# fully-spiking vs hybrid energy comparison of the three MSKD-trained ResNet-18 students under three energy models.
# Usage: scripts/mskd_table.sh OUT_DIR [DATA_DIR]
#   results: OUT_DIR/summary.json (mean and sd over seeds per row), OUT_DIR/compare-{direct,kd,mskd}.png,
#   OUT_DIR/energy-models.{txt,json,png} (kundu / lemaire / loihi, MSKD students). Finished runs are kept (resumable).
# Environment (defaults in brackets): DATASET [fashion-mnist], TRAIN [4096], TEST [1000], EPOCHS [2], WIDTH [0.25],
#   T [2], LR [2e-3], SEEDS [0] (ResNet-18 rows), SEEDS34 [0 1 2] (Spike-ResNet-34 row), TEACHER_TRAIN [TRAIN],
#   TEACHER_EPOCHS [3], THREADS [torch default], KD_ARGS (extra training options), MODELS [the four students],
#   TRAIN_ONLY (set: train and export only, e.g. to share the runs among processes with different MODELS).
# docs/results.md §6a was measured with these defaults and THREADS=1 SEEDS="0 1 2"; §6 (MNIST, 2048 images, one seed)
# with DATASET=mnist TRAIN=2048 TEACHER_TRAIN=4096 SEEDS34=0
#   KD_ARGS="--kd-scaling hinton --recon-loss mean --lif-form bsd".
set -euo pipefail
OUT=${1:?usage: scripts/mskd_table.sh OUT_DIR [DATA_DIR]}
DATA=${2:-../shared/data}
SEEDS=${SEEDS:-0}
SEEDS34=${SEEDS34:-0 1 2}
TEST=${TEST:-1000}
SHARED="--dataset ${DATASET:-fashion-mnist} --data-dir $DATA --test-samples $TEST --width ${WIDTH:-0.25} \
  --timesteps ${T:-2} --optimizer adamw --lr ${LR:-2e-3} --quiet ${THREADS:+--threads $THREADS} ${KD_ARGS:-}"
TRAIN_ARGS="--train-samples ${TRAIN:-4096} --epochs ${EPOCHS:-2} $SHARED"

[ -f "$OUT/teacher/model.pt" ] || snncc train --method ann --model resnet18 --seed 0 $SHARED \
  --train-samples ${TEACHER_TRAIN:-${TRAIN:-4096}} --epochs ${TEACHER_EPOCHS:-3} --out "$OUT/teacher"
runs() {  # the run directories of one method, in table order
  for model in ${MODELS:-spike-resnet18 sew-resnet18 ms-resnet18 spike-resnet34}; do
    seeds=$SEEDS; [ $model = spike-resnet34 ] && seeds=$SEEDS34
    for seed in $seeds; do echo "$OUT/$model-$1-s$seed"; done
  done
}
for method in direct kd mskd; do
  for run in $(runs $method); do
    [ -f "$run/model.snn.onnx" ] && continue
    name=$(basename "$run"); model=${name%-$method-s*}; seed=${name##*-s}
    teacher=(); [ "$method" != direct ] && teacher=(--teacher "$OUT/teacher/model.pt")
    start=$(date +%s)
    snncc train --method $method --model $model --seed $seed $TRAIN_ARGS "${teacher[@]}" --out "$run"
    echo "$(( $(date +%s) - start ))" > "$run/wall_s.txt"
    snncc export "$run/model.pt" -o "$run/model.snn.onnx"
  done
done
[ -n "${TRAIN_ONLY:-}" ] && exit 0
for method in direct kd mskd; do
  snncc energy report $(for r in $(runs $method); do echo "$r/model.snn.onnx"; done) --data-dir "$DATA" \
    --limit $TEST --png "$OUT/compare-$method.png" --json "$OUT/energy-$method.json" --force > "$OUT/energy-$method.txt"
done
snncc energy report "$OUT"/{spike,sew,ms}-resnet18-mskd-s${SEEDS%% *}/model.snn.onnx --data-dir "$DATA" --limit $TEST \
  --energy-model kundu --energy-model lemaire --energy-model loihi --compare --png "$OUT/energy-models.png" \
  --json "$OUT/energy-models.json" --force > "$OUT/energy-models.txt"
python - "$OUT" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = {}
for m in ("direct", "kd", "mskd"):
    for rep in json.loads((out / f"energy-{m}.json").read_text())["models"]:
        run = pathlib.Path(rep["model"]).parent
        row = rows.setdefault(run.name.rsplit("-s", 1)[0], {"runs": []})
        row["runs"].append({"seed": int(run.name.rsplit("-s", 1)[1]),
                            "module_test_accuracy": json.loads((run / "metrics.json").read_text())["test_accuracy"],
                            "graph_accuracy": rep["accuracy"], "fully_spiking": rep["fully_spiking"],
                            "mean_firing_rate": rep["mean_firing_rate"], "energy_nj": rep["total_energy_pj"] / 1e3,
                            "ann_energy_nj": rep["ann_energy_pj"] / 1e3,
                            "train_wall_s": int((run / "wall_s.txt").read_text())})
for row in rows.values():
    for key in ("graph_accuracy", "energy_nj", "mean_firing_rate"):
        vals = [r[key] for r in row["runs"]]
        row[key + "_mean"] = statistics.fmean(vals)
        row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
rows["teacher"] = {"module_test_accuracy": json.loads((out / "teacher/metrics.json").read_text())["test_accuracy"]}
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for k, v in rows.items():
    print(k, {a: (round(b, 4) if isinstance(b, float) else b) for a, b in v.items() if a != "runs"})
PY

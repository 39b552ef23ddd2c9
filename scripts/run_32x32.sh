#!/usr/bin/env bash
# Issue 17 item 4: `snncc run` and `snncc energy report` on the 10,000-sample 32x32 test set (fashion-mnist-32:
# Fashion-MNIST zero-padded to 32x32) with a Spike-ResNet-18; wall time and samples/s for numba and dense torch.
#
#   scripts/run_32x32.sh                      # train (if OUT/train/model.pt is missing), export, time the three runs
#   WIDTH=1 OUT=runs/set32-w1 scripts/run_32x32.sh
#   SKIP_TRAIN=1 MODEL=path.snn.onnx scripts/run_32x32.sh   # time an existing graph only
#
# Environment: OUT (runs/set32), DATA_DIR (../shared/data), WIDTH (0.5), TIMESTEPS (4), TRAIN_SAMPLES (4096),
# EPOCHS (2), LIMIT (all 10,000 test samples), BACKENDS ("numba dense"), THREADS (1: both backends single-threaded,
# the fair choice on a shared 2-core machine where torch's 2-thread OpenMP loops stall under load; 0: each library's
# default), SNNCC (.venv/bin/snncc).
# Writes OUT/summary.txt (one line per timed command: wall s, samples/s, load before/after) and per-command logs.
# Rerun after the simulator kernels change: the trained checkpoint and graph are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/set32}
DATA_DIR=${DATA_DIR:-../shared/data}
WIDTH=${WIDTH:-0.5}
TIMESTEPS=${TIMESTEPS:-4}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-4096}
EPOCHS=${EPOCHS:-2}
BACKENDS=${BACKENDS:-numba dense}
THREADS=${THREADS:-1}
SNNCC=${SNNCC:-.venv/bin/snncc}
LIMIT_ARGS=()
[[ -n "${LIMIT:-}" ]] && LIMIT_ARGS=(--limit "$LIMIT")
mkdir -p "$OUT"
MODEL=${MODEL:-$OUT/spike-resnet18-fm32.snn.onnx}
SUMMARY=$OUT/summary.txt

if [[ -z "${SKIP_TRAIN:-}" && ! -f "$OUT/train/model.pt" ]]; then
  echo "# train: $(uptime)" | tee -a "$SUMMARY"
  "$SNNCC" train --method direct --model spike-resnet18 --dataset fashion-mnist-32 --data-dir "$DATA_DIR" \
    --width "$WIDTH" --timesteps "$TIMESTEPS" --train-samples "$TRAIN_SAMPLES" --test-samples 500 \
    --epochs "$EPOCHS" --optimizer adamw --lr 2e-3 --threads 1 --out "$OUT/train" --force 2> "$OUT/train.log"
fi
if [[ -z "${SKIP_TRAIN:-}" && ! -f "$MODEL" ]]; then
  "$SNNCC" export "$OUT/train/model.pt" -o "$MODEL"
fi

# one timed command: wall seconds around the whole CLI call (data loading and lowering included)
timed() {
  local name=$1; shift
  local before after t0 t1
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s.%N)
  "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  t1=$(date +%s.%N)
  after=$(cut -d' ' -f1-3 /proc/loadavg)
  local rate
  rate=$(tr '\r' '\n' < "$OUT/$name.err" | grep -o '[0-9.]*sample/s' | tail -1 || true)
  printf '%-14s wall %7.1f s  bar %-16s load before %s, after %s  $ %s\n' \
    "$name" "$(awk "BEGIN {print $t1 - $t0}")" "$rate" "$before" "$after" "$*" | tee -a "$SUMMARY"
}

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) nproc $(nproc): $(uptime)" | tee -a "$SUMMARY"
for backend in $BACKENDS; do
  timed "run-$backend" "$SNNCC" run "$MODEL" --backend "$backend" --threads "$THREADS" --data-dir "$DATA_DIR" "${LIMIT_ARGS[@]}"
  grep -m1 accuracy "$OUT/run-$backend.out" | tee -a "$SUMMARY"
  # the mean firing rate over all populations: total spikes / (neurons x samples x T)
  awk '/accuracy/ {n = $(NF-2); split($NF, t, "="); T = t[2]} / neurons / {s += $4; m += $2}
       END {printf "  mean firing rate %.4f (%.0f spikes, %d neurons, %d samples, T=%d)\n", s / (m * n * T), s, m, n, T}' \
    "$OUT/run-$backend.out" | tee -a "$SUMMARY"
done
timed "energy-numba" "$SNNCC" energy report "$MODEL" --backend numba --threads "$THREADS" --data-dir "$DATA_DIR" "${LIMIT_ARGS[@]}" \
  --json "$OUT/energy-numba.json" --force
grep -E "total \(SNN\)|^accuracy" "$OUT/energy-numba.out" | tee -a "$SUMMARY"

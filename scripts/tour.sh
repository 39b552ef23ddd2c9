#!/usr/bin/env bash
# Runs the README's tour exactly as written (the bash block between <!-- tour:begin --> and <!-- tour:end -->),
# from the repository root, stopping at the first failing command. Usage: scripts/tour.sh [LOG]
set -euo pipefail
cd "$(dirname "$0")/.."
block=$(awk '/<!-- tour:begin -->/{f=1; next} /<!-- tour:end -->/{f=0} f && !/^```/' README.md)
[ -n "$block" ] || { echo "no tour block in README.md" >&2; exit 2; }
log=${1:-runs/tour.log}
mkdir -p "$(dirname "$log")"
bash -euxo pipefail -c "$block" 2>&1 | tee "$log"

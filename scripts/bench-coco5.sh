#!/usr/bin/env bash
# Benchmark of the COCO-5 recipe (issue: beat the report's CNN, 79%): trains
# models/coco5-vit.toml once per seed on ../shared/data/coco5 (CPU unless
# DEVICE=cuda), exports and verifies ONNX, re-evaluates the exported file with
# vit-infer (ONNX Runtime), and prints accuracy, wall time and images/s per
# seed and their mean.
#
#   scripts/bench-coco5.sh [SEED...]        (default seeds: 0 1 2)
#   CONFIG=models/x.toml RUNS=runs/x EXTRA="--epochs 40" scripts/bench-coco5.sh 0
#
# Run it on an otherwise idle machine: libtorch's CPU threads slow down many
# times when another process competes for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/debug"
CONFIG="${CONFIG:-models/coco5-vit.toml}"
DATA="${COCO5:-../shared/data/coco5}"
RUNS="${RUNS:-runs/bench-coco5}"
DEVICE="${DEVICE:-auto}"
THREADS="${THREADS:-$(nproc)}"
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2)
[ -d "$DATA/train" ] || { echo "bench-coco5: no COCO-5 data at $DATA (set COCO5=DIR)" >&2; exit 1; }

json_field() { sed -n "s/^ *\"$2\": *\([^,]*\),\{0,1\}$/\1/p" "$1" | head -n 1; }

rows=()
for seed in "${SEEDS[@]}"; do
  run="$RUNS/seed$seed"
  rm -rf "$run"; mkdir -p "$RUNS"
  echo "[bench] seed $seed: $CONFIG -> $run"
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$BIN/vit-train" fit --config "$CONFIG" --data "$DATA" --out "$run" --seed "$seed" \
    --device "$DEVICE" --threads "$THREADS" --quiet ${EXTRA:-} | tee "$run.log"
  wall=$(( $(date +%s) - start ))
  infer=$("$BIN/vit-infer" --model "$run/model.onnx" --eval "$DATA" --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
  acc=$(json_field "$run/summary.json" val_accuracy)
  ips=$(json_field "$run/summary.json" train_images_per_sec)
  rows+=("$seed $acc $infer $wall $ips")
done

echo
printf '%-6s %-12s %-14s %-10s %-10s\n' seed val_acc vit-infer wall_s img/s
for r in "${rows[@]}"; do
  read -r s a i w p <<<"$r"
  printf '%-6s %-12.4f %-14.4f %-10s %-10.1f\n' "$s" "$a" "$i" "$w" "$p"
done
printf '%s\n' "${rows[@]}" | awk '{a+=$2; w+=$4; n++} END {printf "mean   %-12.4f %-14s %-10.0f (%d seeds)\n", a/n, "", w/n, n}'

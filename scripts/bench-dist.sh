#!/usr/bin/env bash
# Data-parallel training speed on this machine: 1 process x 2 threads against
# 2 ranks x 1 thread (torchrun, Gloo) on the same global batch (the ranks take
# half the config's batch each), ROUNDS alternations of an EPOCHS-epoch fit on
# MAX_PER_CLASS images per class; the median images/s of each side, their ratio,
# and rank 0's all-reduce time and bytes per step (its RUST_LOG=debug epoch line).
#
#   scripts/bench-dist.sh [CONFIG]        (default models/coco5-vit.toml)
#   ROUNDS=3 EPOCHS=2 MAX_PER_CLASS=64 scripts/bench-dist.sh
#
# Timings on a shared machine are noise: compare the ratio of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/debug/vit-train"
CONFIG="${1:-models/coco5-vit.toml}"
ROUNDS="${ROUNDS:-3}"
EPOCHS="${EPOCHS:-2}"
MAX_PER_CLASS="${MAX_PER_CLASS:-64}"
RUNS="${RUNS:-runs/bench-dist}"
COCO5="${COCO5:-../shared/data/coco5}"

cargo build -q -p vit-train --bin vit-train
batch=$(python -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['train']['batch_size'])" "$CONFIG")
[ $((batch % 2)) -eq 0 ] || { echo "bench-dist: batch_size $batch is odd: no equal halves" >&2; exit 1; }
common=(fit --config "$CONFIG" --data "$COCO5" --epochs "$EPOCHS" --max-per-class "$MAX_PER_CLASS" --device cpu --quiet --no-export)
ips() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['train_images_per_sec'])" "$1/summary.json"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

mkdir -p "$RUNS"
one=(); two=()
for round in $(seq "$ROUNDS"); do
  rm -rf "$RUNS/one" "$RUNS/two"
  "$BIN" "${common[@]}" --out "$RUNS/one" --threads 2 >"$RUNS/one.log" 2>&1 || { cat "$RUNS/one.log" >&2; exit 1; }
  RUST_LOG=debug torchrun --standalone --nproc-per-node 2 --no-python "$BIN" "${common[@]}" --out "$RUNS/two" \
    --threads 1 --batch-size $((batch / 2)) >"$RUNS/two.log" 2>&1 || { cat "$RUNS/two.log" >&2; exit 1; }
  one+=("$(ips "$RUNS/one")"); two+=("$(ips "$RUNS/two")")
  comm=$(grep -o '[0-9]* collectives, .* in collectives' "$RUNS/two.log" | tail -1 || true)
  printf '[bench-dist] round %d: 1x2 threads %.1f img/s, 2 ranks x 1 thread %.1f img/s (rank 0: %s)\n' \
    "$round" "${one[-1]}" "${two[-1]}" "$comm"
done
m1=$(median "${one[@]}"); m2=$(median "${two[@]}")
echo
echo "$CONFIG, $ROUNDS alternating rounds, $EPOCHS epochs x $MAX_PER_CLASS images per class, global batch $batch"
printf '%-22s %10s\n' setup "img/s"
printf '%-22s %10.1f\n' "1 process x 2 threads" "$m1" "2 ranks x 1 thread" "$m2"
printf 'ratio (2 ranks / 1 process): %.3f\n' "$(awk "BEGIN {print $m2 / $m1}")"

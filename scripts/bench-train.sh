#!/usr/bin/env bash
# Training speed of vit-train against PyTorch eager on the same network, same
# threads, same batch, measured in one run. For each CONFIG: a tiny seeded run
# (1 epoch, 4 images per class) gives weights, config.toml and model.onnx;
# bench/pytorch_reference.py proves its network equals that ONNX (exit 1 if
# not); then ROUNDS alternations of ours (examples/train_steps.rs: Trainer::step)
# and the reference, STEPS timed steps each, and the median images/s of each
# side and their ratio.
#
#   scripts/bench-train.sh [CONFIG...]      (default: models/seed-hw9.toml models/coco5-vit.toml)
#   ROUNDS=5 STEPS=30 THREADS=2 DEVICE=cpu scripts/bench-train.sh models/coco5-vit.toml
#   REF_IMPL=foreach scripts/bench-train.sh ...   # torch.optim implementation of the reference
#   REF_COMPILE=reduce-overhead scripts/bench-train.sh ...   # torch.compile mode of the reference (default, reduce-overhead)
#   OURS="--fused-attention" scripts/bench-train.sh ...   # extra flags of examples/train_steps.rs
#   DEVICE=cuda PRECISION=bf16 scripts/bench-train.sh models/coco5-vit-gpu.toml   # on a GPU
#   BIN=dir PYTHON=python3 ...   # prebuilt vit-train and train_steps in dir (no cargo), another python
#
# Both sides run with the same environment (set OMP_WAIT_POLICY etc. outside to
# compare policies). Run it on an otherwise idle machine: timings on a busy one
# are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PYTHON="${PYTHON:-python}"
PRECISION="${PRECISION:-fp32}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-3}"
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-3}"
DEVICE="${DEVICE:-cpu}"
REF_IMPL="${REF_IMPL:-default}"
RUNS="${RUNS:-runs/bench-train}"
COCO5="${COCO5:-../shared/data/coco5}"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(models/seed-hw9.toml models/coco5-vit.toml)
case "$DEVICE" in cpu|cuda) ;; *) echo "bench-train: DEVICE=$DEVICE: expected cpu or cuda" >&2; exit 1 ;; esac

if [ -z "${BIN:-}" ]; then
  cargo build -q -p vit-train --bin vit-train --example train_steps
  BIN="$CARGO_TARGET_DIR/debug"; STEPS_BIN="$BIN/examples/train_steps"
else
  STEPS_BIN="$BIN/train_steps"
fi
"$PYTHON" -c 'import torch, onnxruntime' || { echo "bench-train: $PYTHON lacks torch/onnxruntime (scripts/setup.sh)" >&2; exit 1; }

field() { "$PYTHON" -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

summary=()
for config in "${CONFIGS[@]}"; do
  name="$(basename "$config" .toml)"
  data="$COCO5"; [ "$name" = fashion-mnist ] && data="$FASHION_MNIST_DIR"
  run="$RUNS/$name"
  rm -rf "$run"; mkdir -p "$RUNS"
  "$BIN/vit-train" fit --config "$config" --data "$data" --out "$run" --epochs 1 --max-per-class 4 \
    --threads "$THREADS" --device cpu --quiet >"$run.log" 2>&1 || { cat "$run.log" >&2; exit 1; }
  "$PYTHON" bench/pytorch_reference.py "$run" --check-only --threads "$THREADS"
  ours=(); ref=()
  for round in $(seq "$ROUNDS"); do
    o=$("$STEPS_BIN" --run "$run" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" --device "$DEVICE" \
      --precision "$PRECISION" ${OURS:-})
    r=$("$PYTHON" bench/pytorch_reference.py "$run" --skip-check --steps "$STEPS" --warmup "$WARMUP" \
      --threads "$THREADS" --optimizer-impl "$REF_IMPL" --device "$DEVICE" --precision "$PRECISION" ${REF_COMPILE:+--compile "$REF_COMPILE"})
    ours+=("$(field images_per_sec <<<"$o")"); ref+=("$(field images_per_sec <<<"$r")")
    printf '[bench-train] %s round %d: ours %.1f img/s, pytorch %.1f img/s\n' "$name" "$round" "${ours[-1]}" "${ref[-1]}"
  done
  mo=$(median "${ours[@]}"); mr=$(median "${ref[@]}")
  summary+=("$(printf '%-20s %12.1f %12.1f %8.3f' "$name" "$mo" "$mr" "$(awk "BEGIN {print $mo / $mr}")")")
done

echo
echo "device $DEVICE, precision $PRECISION, threads $THREADS, $ROUNDS alternating rounds of $STEPS steps, ours: ${OURS:-defaults}, reference optimizer: $REF_IMPL${REF_COMPILE:+, torch.compile $REF_COMPILE}, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}"
printf '%-20s %12s %12s %8s\n' config "ours img/s" "torch img/s" ratio
printf '%s\n' "${summary[@]}"

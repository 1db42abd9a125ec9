#!/usr/bin/env bash
# Training speed on a GPU in one go (the CUDA half of the training-speed
# measurements): ours vs PyTorch eager on models/coco5-vit-gpu.toml in fp32 and
# bf16, each with the per-tensor and the fused optimiser on both sides
# (scripts/bench-train.sh pairings), the same ratio for the two CPU presets, the
# batch producer alone at 1-8 workers, and three real epochs of `fit` per
# precision; then the step's launch-overhead switches (the capturable optimiser
# alone, CUDA-graph replay, which includes it) against PyTorch eager and
# torch.compile (default and reduce-overhead) in bf16. Prebuilt binaries, no cargo: a GPU box needs only libtorch (its
# PyTorch) and python3 with torch + onnxruntime.
#
#   BIN=dir DATA=coco5 OUT=results scripts/gpu-bench-train.sh [--dry]
#
# --dry runs every step on the CPU with a few steps (a rehearsal where there is
# no GPU; torch.compile rows only check that the reference has --compile, since
# compiling takes minutes on a CPU; --cuda-graph trains eagerly there, with its warning). Each step's output is appended to $OUT/gpu-bench.log.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:?BIN=folder holding vit-train, train_steps, data_throughput}"
DATA="${DATA:-../shared/data/coco5}"
OUT="${OUT:-runs/gpu-bench}"
DRY=0; [ "${1:-}" = --dry ] && DRY=1
for b in vit-train train_steps data_throughput; do
  [ -x "$BIN/$b" ] || { echo "gpu-bench-train: $BIN/$b missing (BIN must hold vit-train, train_steps and data_throughput)" >&2; exit 1; }
done
mkdir -p "$OUT"
LOG="$OUT/gpu-bench.log"
FAILED=()
export PYTHON="${PYTHON:-python3}" BIN COCO5="$DATA" RUNS="$OUT/runs"
if [ $DRY = 1 ]; then
  export DEVICE=cpu ROUNDS=1 STEPS=2 WARMUP=1 THREADS=2; EPOCHS=1; WORKERS=1,2; FIT_DEVICE=cpu; FIT_EXTRA="--max-per-class 8"
else
  export DEVICE=cuda ROUNDS="${ROUNDS:-3}" STEPS="${STEPS:-40}" WARMUP="${WARMUP:-10}" THREADS="${THREADS:-8}"
  EPOCHS=5; WORKERS=1,2,4,8; FIT_DEVICE=cuda; FIT_EXTRA=""
fi
# Every step runs; a failed one is named in the log and at the end, and the script exits 1.
step() {
  echo "=== $*" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "=== FAILED ($rc): $*" | tee -a "$LOG"; FAILED+=("$*"); }
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
for precision in fp32 bf16; do
  step env PRECISION=$precision scripts/bench-train.sh models/coco5-vit-gpu.toml
  step env PRECISION=$precision REF_IMPL=fused OURS="--fused-optimizer true" scripts/bench-train.sh models/coco5-vit-gpu.toml
done
# The sync-free step is always on; these switch the rest of the launch overhead off.
"$BIN/train_steps" --help | grep -q -- --cuda-graph ||
  { echo "gpu-bench-train: $BIN/train_steps has no --cuda-graph (rebuild it)" >&2; exit 1; }
"$PYTHON" bench/pytorch_reference.py --help | grep -q -- --compile ||
  { echo "gpu-bench-train: bench/pytorch_reference.py has no --compile" >&2; exit 1; }
for ours in "--fused-optimizer true --capturable-optimizer" "--fused-optimizer true --cuda-graph"; do
  step env PRECISION=bf16 REF_IMPL=fused OURS="$ours" scripts/bench-train.sh models/coco5-vit-gpu.toml
done
if [ $DRY = 0 ]; then
  for mode in default reduce-overhead; do
    step env PRECISION=bf16 REF_IMPL=fused REF_COMPILE=$mode OURS="--fused-optimizer true --cuda-graph" \
      scripts/bench-train.sh models/coco5-vit-gpu.toml
  done
fi
for mode in memory stream; do
  step "$BIN/data_throughput" --config models/coco5-vit-gpu.toml --data "$DATA" --workers "$WORKERS" --mode $mode
done
for precision in fp32 bf16; do
  rm -rf "$OUT/fit-$precision"
  step "$BIN/vit-train" fit --config models/coco5-vit-gpu.toml --data "$DATA" --out "$OUT/fit-$precision" \
    --epochs $EPOCHS --device $FIT_DEVICE --precision $precision --data-workers 8 --no-export $FIT_EXTRA
done
# The issue's goal, in whole epochs of fit: every switch off (today's path: host batches, per-tensor
# optimiser, eager) against every switch on (device-resident data, fused capturable optimiser, CUDA graph).
for switches in "off:--data-mode memory --fused-optimizer false --cuda-graph false" \
                "on:--data-mode device --fused-optimizer true --cuda-graph true"; do
  rm -rf "$OUT/fit-switches-${switches%%:*}"
  # shellcheck disable=SC2086
  step "$BIN/vit-train" fit --config models/coco5-vit-gpu.toml --data "$DATA" --out "$OUT/fit-switches-${switches%%:*}" \
    --epochs $EPOCHS --device $FIT_DEVICE --precision bf16 --data-workers 8 --no-export $FIT_EXTRA ${switches#*:}
done
step scripts/bench-train.sh models/coco5-vit.toml models/seed-hw9.toml
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'gpu-bench-train: %d step(s) failed:\n' ${#FAILED[@]} | tee -a "$LOG" >&2
  printf '  %s\n' "${FAILED[@]}" | tee -a "$LOG" >&2
  exit 1
fi
echo "done: $LOG"

#!/usr/bin/env bash
# Inference numbers of an exported model (default: the demo's
# runs/demo/model.onnx, made by scripts/demo.sh): vit-infer's process time
# for one image (cold start to printed result), ONNX Runtime vs tract p50/p99
# latency at batch 1 and images/s at batch 64 on the same inputs, and the size
# of the vit-infer binary. Run it on an otherwise idle machine.
#
#   scripts/bench-infer.sh [MODEL.onnx [IMAGE]]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
source scripts/env.sh
MODEL="${1:-runs/demo/model.onnx}"
[ -f "$MODEL" ] || { echo "bench-infer: $MODEL not found (run scripts/demo.sh first, or pass a model)" >&2; exit 1; }
cargo build -q -p vit --features cli --bin vit-infer
# tract is at -O0 in dev builds (Cargo.toml): time it in the `measure` profile.
cargo build -q -p vit-train --profile measure --example infer_latency
BIN="$CARGO_TARGET_DIR/debug"
LATENCY="$CARGO_TARGET_DIR/measure/examples/infer_latency"
IMAGE="${2:-}"
if [ -z "$IMAGE" ]; then
  IMAGE=$(ls runs/demo/samples/*.png 2>/dev/null | head -n 1 || true)
  [ -n "$IMAGE" ] || { echo "bench-infer: no sample image; pass one as the second argument" >&2; exit 1; }
fi

echo "== vit-infer cold start, one image ($IMAGE), 10 runs"
"$BIN/vit-infer" --model "$MODEL" --ep cpu "$IMAGE" >/dev/null   # page cache warm
best=""; all=()
for _ in $(seq 10); do
  s=$(date +%s.%N); "$BIN/vit-infer" --model "$MODEL" --ep cpu "$IMAGE" >/dev/null; e=$(date +%s.%N)
  all+=("$(echo "$e - $s" | bc)")
done
printf '%s\n' "${all[@]}" | sort -n | awk '{v[NR]=$1} END {printf "process wall time: min %.3f s, median %.3f s, max %.3f s\n", v[1], v[int((NR+1)/2)], v[NR]}'

echo "== latency and throughput, ort vs tract"
"$LATENCY" --model "$MODEL"

echo "== binary size"
tmp=$(mktemp); cp "$BIN/vit-infer" "$tmp"; strip "$tmp"
echo "vit-infer: $(stat -c %s "$BIN/vit-infer") bytes (dev profile), $(stat -c %s "$tmp") bytes stripped; ONNX Runtime is loaded at run time from $ORT_DYLIB_PATH"
rm -f "$tmp"

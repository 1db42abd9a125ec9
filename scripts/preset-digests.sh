#!/usr/bin/env bash
# Behaviour fingerprint of the trainer and exporter, for refactors that must not
# change numbers: for every preset in models/, a seeded 1-epoch CPU fit on a few
# images per class (SHA-256 of last.safetensors) and the export of that
# checkpoint (SHA-256 of model.onnx).
#   scripts/preset-digests.sh OUT_DIR [BIN_DIR]        # fit + export, print digests
#   REEXPORT=RUNS_DIR scripts/preset-digests.sh OUT_DIR  # also export RUNS_DIR's
#       checkpoints again with this build (same bytes expected as RUNS_DIR's files)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT="${1:?usage: scripts/preset-digests.sh OUT_DIR [BIN_DIR]}"
BIN="${2:-$CARGO_TARGET_DIR/debug}"
COCO5="${VIT_COCO5:-../shared/data/coco5}"
mkdir -p "$OUT"
for preset in models/*.toml; do
  name="$(basename "$preset" .toml)"
  data="$COCO5"; [ "$name" = fashion-mnist ] && data="$FASHION_MNIST_DIR"
  run="$OUT/$name"
  rm -rf "$run"
  "$BIN/vit-train" fit --config "$preset" --data "$data" --out "$run" --epochs 1 --max-per-class 4 \
    --threads 2 --device cpu --quiet --no-export >"$OUT/$name.log" 2>&1
  "$BIN/vit-train" export --run "$run" >>"$OUT/$name.log" 2>&1
  echo "$name weights $(sha256sum <"$run/last.safetensors" | cut -c1-16) onnx $(sha256sum <"$run/model.onnx" | cut -c1-16)"
  if [ -n "${REEXPORT:-}" ]; then
    again="$OUT/reexport-$name"
    rm -rf "$again"; cp -r "$REEXPORT/$name" "$again"; rm -f "$again/model.onnx"
    "$BIN/vit-train" export --run "$again" >>"$OUT/$name.log" 2>&1
    echo "$name reexport-of-$REEXPORT onnx $(sha256sum <"$again/model.onnx" | cut -c1-16)"
  fi
done

#!/usr/bin/env bash
# The main job: set-up, then train the default preset on Fashion-MNIST on the CPU,
# export ONNX (verified against tch with tract) and copy it to models/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --release
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/release"
RUN="${RUN:-runs/demo}"
if [ -e "$RUN/resume.safetensors" ]; then
  echo "[demo] $RUN already holds a run; moving it to $RUN.old"
  rm -rf "$RUN.old"; mv "$RUN" "$RUN.old"
fi
echo "[demo] training models/fashion-mnist.toml on $FASHION_MNIST_DIR"
"$BIN/vit-train" fit --config models/fashion-mnist.toml --data "$FASHION_MNIST_DIR" --out "$RUN" "$@"
cp "$RUN/model.onnx" models/fashion-mnist.onnx
echo "[demo] model: models/fashion-mnist.onnx; plots: $RUN/loss.png, $RUN/confusion.png"

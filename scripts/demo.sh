#!/usr/bin/env bash
# The main job: set-up, then train the default preset on Fashion-MNIST on the CPU,
# export ONNX (verified against tch with tract) into runs/demo/model.onnx (where
# vit-infer looks when no --model is given), and classify a few Fashion-MNIST test
# images saved as PNG with vit-infer (ONNX Runtime). Set-up installs and builds
# only what the demo needs (setup.sh --demo); the test command does the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --demo
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/debug"
RUN="${RUN:-runs/demo}"
if [ -e "$RUN/resume.safetensors" ]; then
  echo "[demo] $RUN already holds a run; moving it to $RUN.old"
  rm -rf "$RUN.old"; mv "$RUN" "$RUN.old"
fi
echo "[demo] training models/fashion-mnist.toml on $FASHION_MNIST_DIR"
"$BIN/vit-train" fit --config models/fashion-mnist.toml --data "$FASHION_MNIST_DIR" --out "$RUN" "$@"
echo "[demo] model: $RUN/model.onnx; plots: $RUN/curves.png, $RUN/confusion.png; TensorBoard events beside them (pip install tensorboard; tensorboard --logdir runs)"
SAMPLES="$RUN/samples"
"$BIN/vit-train" samples --run "$RUN" --out "$SAMPLES" --count 8 >/dev/null
echo "[demo] vit-infer on $SAMPLES (file names carry the true label):"
"$BIN/vit-infer" --model "$RUN/model.onnx" --top-k 1 "$SAMPLES"
echo "[demo] vit-infer --eval on the Fashion-MNIST test set:"
"$BIN/vit-infer" --model "$RUN/model.onnx" --eval "$FASHION_MNIST_DIR"

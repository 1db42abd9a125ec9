#!/usr/bin/env bash
# One prepared GPU check: where a CUDA GPU is present, trains one epoch of a
# preset on COCO-5 with `vit-train fit --device cuda` and prints images/s and the
# device used. Needs a build of vit-train (scripts/setup.sh) and
# libtorch with CUDA (PyPI torch==2.11.0). Usage:
#   scripts/gpu-check.sh [VIT_TRAIN_BINARY] [DATA_DIR] [PRESET]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/vit-toolchain/target}/debug/vit-train}"
DATA="${2:-../shared/data/coco5}"
PRESET="${3:-models/seed-hw9.toml}"
[ -x "$BIN" ] || { echo "gpu-check: $BIN not found; build with scripts/setup.sh" >&2; exit 2; }
[ -d "$DATA" ] || { echo "gpu-check: data $DATA not found" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
OUT="$(mktemp -d)/gpu-run"
"$BIN" fit --config "$PRESET" --data "$DATA" --out "$OUT" --epochs 1 --device cuda --quiet --no-export
python3 - "$OUT/summary.json" <<'PY' 2>/dev/null || cat "$OUT/summary.json"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"device {s['device']}: {s['train_images_per_sec']:.0f} train images/s, val accuracy after 1 epoch {s['val_accuracy']:.4f}")
PY

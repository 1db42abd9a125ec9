#!/usr/bin/env bash
# Batch producer throughput (examples/data_throughput.rs: decode, augment,
# normalise; no model step) streaming the training split from an image folder
# and from the tar shards `vit-train shards` packs it into, at 1 and 2 workers.
# ROUNDS alternations of folder and shards; prints the median images/s of each
# and the shards/folder ratio per worker count.
#
#   scripts/bench-shards.sh                     # COCO-5 (../shared/data/coco5)
#   DATA=/tmp/jpegs CONFIG=models/x.toml ROUNDS=5 scripts/bench-shards.sh
#   GENERATE=20000 scripts/bench-shards.sh      # also a generated folder of 20,000
#                                               # 256x256 JPEGs under /tmp (deleted after)
#
# The shards are written under $SCRATCH (default /tmp/bench-shards) and deleted
# after. Run it on an idle machine: on a busy one only the ratios mean something.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/debug"
ROUNDS="${ROUNDS:-3}"
WORKERS="${WORKERS:-1,2}"
EPOCHS="${EPOCHS:-1}"
CONFIG="${CONFIG:-models/coco5-vit.toml}"
DATA="${DATA:-../shared/data/coco5}"
SCRATCH="${SCRATCH:-/tmp/bench-shards}"
GENERATE="${GENERATE:-0}"

cargo build -q -p vit-train --bin vit-train --example data_throughput
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
trap 'rm -rf "$SCRATCH"' EXIT

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# One line per worker count: "<workers> <images/s>".
throughput() {
  "$BIN/examples/data_throughput" --config "$1" --data "$2" --mode stream --workers "$WORKERS" --epochs "$EPOCHS" |
    python -c 'import json,sys
for l in sys.stdin: r = json.loads(l); print(r["workers"], r["images_per_sec"])'
}

bench() { # NAME CONFIG FOLDER
  local name="$1" config="$2" folder="$3" shards="$SCRATCH/$1-shards"
  "$BIN/vit-train" shards --data "$folder" --out "$shards" --seed "$(sed -n 's/^seed *= *//p' "$config" | head -1)" >/dev/null
  declare -A runs=()
  for round in $(seq "$ROUNDS"); do
    for source in folder shards; do
      local path="$folder"
      [ "$source" = shards ] && path="$shards"
      while read -r workers ips; do
        runs["$source $workers"]+="$ips "
        echo "$name round $round: $source, $workers worker(s): $ips images/s" >&2
      done < <(throughput "$config" "$path")
    done
  done
  for workers in ${WORKERS//,/ }; do
    local f s
    f=$(median ${runs["folder $workers"]})
    s=$(median ${runs["shards $workers"]})
    printf '%s, %s worker(s): folder %.1f images/s, shards %.1f images/s, shards/folder %.2fx (median of %s)\n' \
      "$name" "$workers" "$f" "$s" "$(python -c "print($s / $f)")" "$ROUNDS"
  done
  rm -rf "$shards"
}

bench coco5 "$CONFIG" "$DATA"

if [ "$GENERATE" -gt 0 ]; then
  # 256x256 JPEGs of smooth random colour fields in 10 classes, decoded and resized to the config's size.
  python - "$SCRATCH/jpegs" "$GENERATE" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    d = os.path.join(out, "c%d" % (i % 10))
    os.makedirs(d, exist_ok=True)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((256, 256), Image.BILINEAR).save(os.path.join(d, "%06d.jpg" % i), quality=90)
PY
  bench "generated-$GENERATE" "$CONFIG" "$SCRATCH/jpegs"
  rm -rf "$SCRATCH/jpegs"
fi

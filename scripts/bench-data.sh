#!/usr/bin/env bash
# Data loading speed of vit-train against PyTorch, the closing numbers of
# "Data at scale" in README.md: decode + RandomResizedCrop(SIZE) + horizontal
# flip + normalise, batches of 64, from a folder of JPEGs, at each worker count.
# Ours: examples/data_throughput.rs in stream mode with the crop taken from the
# original file (train.crop_from_original); PyTorch: bench/pytorch_dataloader.py
# (torchvision ImageFolder + DataLoader). ROUNDS alternations of the two per
# worker count, the median images/s of each, their ratio, and the largest peak
# resident memory seen (ours: the process's VmHWM; PyTorch: the RSS of the
# loader and its worker processes, summed and sampled).
#
#   python scripts/make-jpeg-folder.py /tmp/jpegs --count 20000 --size 256
#   scripts/bench-data.sh /tmp/jpegs
#   ROUNDS=5 WORKERS="1 2 4" BATCHES=150 scripts/bench-data.sh /tmp/jpegs
#   PROFILE=release scripts/bench-data.sh /tmp/jpegs   # ours built with --release
#   SHARDS=/tmp/jpegs-shards scripts/bench-data.sh /tmp/jpegs   # also ours from the same
#                        # images packed by `vit-train shards` (third in each round)
#
# BATCHES limits each measurement to that many batches (default: one epoch).
# Timings on a busy machine are noise: compare the ratio, and say what else ran.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
DATA="${1:?usage: scripts/bench-data.sh DIR (make DIR with scripts/make-jpeg-folder.py)}"
ROUNDS="${ROUNDS:-3}"
WORKERS="${WORKERS:-1 2}"
BATCHES="${BATCHES:-}"
SIZE="${SIZE:-224}"
PROFILE="${PROFILE:-debug}"

build=(cargo build -q -p vit-train --example data_throughput)
[ "$PROFILE" = release ] && build+=(--release)
"${build[@]}"
BIN="$CARGO_TARGET_DIR/$PROFILE/examples/data_throughput"
python -c 'import torch, torchvision' || { echo "bench-data: the venv lacks torch/torchvision (scripts/setup.sh)" >&2; exit 1; }

ours_args=(--config models/coco5-vit.toml --data "$DATA" --mode stream --image-size "$SIZE" --batch-size 64
  --augment crop-flip --crop-from-original --val-fraction 0)
ref_args=("$DATA" --size "$SIZE" --batch-size 64)
if [ -n "$BATCHES" ]; then
  ours_args+=(--max-batches "$BATCHES")
  ref_args+=(--batches "$BATCHES")
fi

field() { python -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
largest() { printf '%s\n' "$@" | sort -g | tail -1; }

summary=()
for w in $WORKERS; do
  ours=(); ref=(); ours_rss=(); ref_rss=(); shards=()
  for round in $(seq "$ROUNDS"); do
    line="$("$BIN" "${ours_args[@]}" --workers "$w")"
    ours+=("$(field images_per_sec <<<"$line")"); ours_rss+=("$(field peak_rss_mib <<<"$line")")
    line="$(python bench/pytorch_dataloader.py "${ref_args[@]}" --workers "$w")"
    ref+=("$(field images_per_sec <<<"$line")"); ref_rss+=("$(field peak_rss_mib <<<"$line")")
    printf 'round %s, %s worker(s): ours %.0f images/s, PyTorch %.0f images/s\n' "$round" "$w" "${ours[-1]}" "${ref[-1]}"
    if [ -n "${SHARDS:-}" ]; then
      line="$("$BIN" "${ours_args[@]/#$DATA/$SHARDS}" --workers "$w")"
      shards+=("$(field images_per_sec <<<"$line")")
      printf 'round %s, %s worker(s): ours from shards %.0f images/s\n' "$round" "$w" "${shards[-1]}"
    fi
  done
  if [ -n "${SHARDS:-}" ]; then
    s_med="$(median "${shards[@]}")"
    summary+=("$(printf '%s worker(s): ours from shards %.0f images/s, shards/folder %.2fx' "$w" "$s_med" \
      "$(python -c "print($s_med / $(median "${ours[@]}"))")")")
  fi
  o="$(median "${ours[@]}")"; r="$(median "${ref[@]}")"
  summary+=("$(printf '%s worker(s): ours %.0f images/s (peak RSS %.0f MiB), PyTorch %.0f images/s (peak RSS %.0f MiB), ratio %.2fx' \
    "$w" "$o" "$(largest "${ours_rss[@]}")" "$r" "$(largest "${ref_rss[@]}")" "$(python -c "print($o / $r)")")")
done
echo "median of $ROUNDS alternating rounds, ${SIZE}x${SIZE} crops of $(find "$DATA" -name '*.jpg' | wc -l) JPEGs in $DATA:"
printf '  %s\n' "${summary[@]}"

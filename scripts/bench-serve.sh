#!/usr/bin/env bash
# HTTP serving numbers for one model: throughput and p50/p99 latency of POST
# /v1/models/NAME/classify with COCO-5 JPEG bodies at concurrency 1, 8 and 64,
# for vit-serve with its defaults, with batching off (--max-batch 1), and with one
# session (--instances 1) batching (--max-batch 8 --max-delay-us 2000) or not, and
# for bench/python_server.py (FastAPI + uvicorn +
# onnxruntime + Pillow, one worker); with each server's peak RSS. The load
# generator is wrk (Debian package `wrk`, installed here when missing: the
# fastest to install), fed by a Lua script that rotates over the JPEGs.
# Run it on an otherwise idle machine.
#
#   scripts/bench-serve.sh MODEL.onnx|RUN_DIR [SECONDS_PER_POINT [CONCURRENCIES]]
#   scripts/bench-serve.sh runs/coco5 10 "8"      # a short smoke run at one concurrency
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
MODEL="${1:?usage: scripts/bench-serve.sh MODEL.onnx|RUN_DIR [SECONDS [CONCURRENCIES]]}"
[ -d "$MODEL" ] && MODEL="$MODEL/model.onnx"
[ -f "$MODEL" ] || { echo "bench-serve: $MODEL not found (train and export one: vit-train fit ... --data ../shared/data/coco5)" >&2; exit 1; }
SECS="${2:-20}"
CONCS="${3:-1 8 64}"
DATA="${VIT_COCO5:-../shared/data/coco5}"
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; }
# Bench-only Python packages, pinned.
"$VIT_VENV/bin/python" -c "import fastapi, uvicorn" 2>/dev/null \
  || "$VIT_VENV/bin/python" -m pip install -q "fastapi==0.115.12" "uvicorn==0.34.2"
cargo build -q -p vit --features serve --bin vit-serve
BIN="$CARGO_TARGET_DIR/debug/vit-serve"
NAME=$(basename "$MODEL" .onnx)
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# JPEG bodies: up to 64 validation images, rotated by the Lua script.
mapfile -t JPEGS < <(find "$DATA/val" -name '*.jpg' | sort | head -n 64)
[ "${#JPEGS[@]}" -gt 0 ] || { echo "bench-serve: no JPEGs under $DATA/val" >&2; exit 1; }
{
  echo 'local bodies = {}'
  for f in "${JPEGS[@]}"; do echo "do local h = io.open('$f', 'rb'); bodies[#bodies + 1] = h:read('*a'); h:close() end"; done
  cat <<'LUA'
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/octet-stream"}, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.2f %.2f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, summary.errors.status, summary.requests))
end
LUA
} > "$WORK/bodies.lua"

# Peak RSS (VmHWM, kB) of a process.
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# run LABEL PORT PID: wrk at each concurrency, one table row each.
run() {
  local label=$1 port=$2 pid=$3 url="http://127.0.0.1:$2/v1/models/$NAME/classify"
  curl -sf --data-binary @"${JPEGS[0]}" "$url" >/dev/null || { echo "bench-serve: $label does not answer on $url" >&2; return 1; }
  for c in $CONCS; do
    line=$(wrk -t "$(( c < 4 ? c : 4 ))" -c "$c" -d "${SECS}s" --latency -s "$WORK/bodies.lua" "$url" | grep '^RESULT')
    read -r _ rps p50 p99 non2xx total <<< "$line"
    printf '| %-28s | %4d | %8s | %8s | %8s | %6s | %8s |\n' "$label" "$c" "$rps" "$p50" "$p99" "$non2xx" "$(peak_rss "$pid")"
  done
}

echo "model $MODEL, ${SECS}s per point, JPEG bodies from $DATA/val (${#JPEGS[@]} files)"
echo "| server                       | conc |    img/s | p50 (ms) | p99 (ms) | non-2xx | peak RSS kB |"
echo "|---|---|---|---|---|---|---|"
# Defaults (on 2 cores: 2 sessions x 1 thread, batches of up to 8 without waiting), then
# batching off, then one session of one thread per core with and without batching.
for mode in "defaults:" "batching off:--max-batch 1" "1 session, batch 8 / 2 ms:--instances 1 --max-batch 8 --max-delay-us 2000" \
  "1 session, batching off:--instances 1 --max-batch 1"; do
  label="vit-serve ${mode%%:*}"
  # shellcheck disable=SC2086
  "$BIN" "$MODEL" --port 0 --ep cpu --queue 256 ${mode#*:} > "$WORK/serve.out" 2> "$WORK/serve.err" &
  pid=$!
  for _ in $(seq 200); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$WORK/serve.out" | head -n 1)
  [ -n "$port" ] || { cat "$WORK/serve.err" >&2; exit 1; }
  run "$label" "$port" "$pid"
  kill -TERM "$pid"; wait "$pid" || true
done
"$VIT_VENV/bin/python" bench/python_server.py "$MODEL" --port 8765 > "$WORK/py.err" 2>&1 &
pid=$!
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:8765/docs" && break; sleep 0.1; done
run "FastAPI+uvicorn+onnxruntime" 8765 "$pid"
kill -TERM "$pid"; wait "$pid" || true

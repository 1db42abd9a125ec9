#!/usr/bin/env bash
# The deployment formats of one COCO-5 model side by side: file size,
# validation accuracy (vit-infer --eval, ONNX Runtime CPU), batch-1 p50
# latency and batch-64 images/s (crates/vit-train/examples/infer_latency, the
# timing of scripts/bench-infer.sh, ONNX Runtime CPU, the same threads for
# every format) for fp32, int8, uint8 input and int8 with uint8 input; fp16 for
# correctness only (its export is verified against tch, and its accuracy is
# measured). Then where the time goes at batch 64 (ONNX Runtime's profiler,
# time per operator type) for fp32 and int8.
#
# Without RUN it trains a COCO-5 run first (models/coco5-vit.toml, 20 epochs,
# about 6 minutes on 2 idle cores) into /tmp/vit-bench-deploy/coco5, reused on
# the next call. Timings are medians of 3 alternating rounds; on a shared
# machine they are noisy: compare the ratios, not the absolute numbers.
#
#   scripts/bench-deploy.sh [RUN]          THREADS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build >/dev/null
source scripts/env.sh
DATA=../shared/data/coco5
[ -d "$DATA/val" ] || { echo "bench-deploy: COCO-5 not found at $DATA" >&2; exit 1; }
THREADS="${THREADS:-2}"
cargo build -q -p vit-train --bin vit-train --example infer_latency
cargo build -q -p vit --features cli --bin vit-infer
BIN="$CARGO_TARGET_DIR/debug"

RUN="${1:-}"
if [ -z "$RUN" ]; then
  RUN=/tmp/vit-bench-deploy/coco5
  if [ ! -f "$RUN/summary.json" ]; then
    echo "== training a COCO-5 run into $RUN (20 epochs)"
    rm -rf "$RUN"
    "$BIN/vit-train" fit --config models/coco5-vit.toml --data "$DATA" --out "$RUN" --epochs 20 \
      --ema-decay 0.995 --warmup-epochs 1 --eval-every 5 --threads "$THREADS" --no-export --quiet
  fi
fi
OUT=$(mktemp -d /tmp/bench-deploy.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

echo "== exports of $RUN"
export_as() { # NAME FLAGS...
  local name=$1; shift
  "$BIN/vit-train" export --run "$RUN" --out "$OUT/$name.onnx" "$@" 2>&1 | grep -v '^calibrated\|^validation accuracy' | sed "s|^|$name: |"
}
export_as fp32
export_as int8 --quantize int8
export_as uint8 --input uint8
export_as int8-uint8 --input uint8 --quantize int8
export_as fp16 --precision fp16

echo "== size and validation accuracy ($DATA/val, vit-infer --eval, ONNX Runtime CPU)"
printf '%-11s %10s %9s\n' format KiB accuracy
for m in fp32 int8 uint8 int8-uint8 fp16; do
  acc=$("$BIN/vit-infer" --model "$OUT/$m.onnx" --ep cpu --eval "$DATA" --json 2>/dev/null \
    | python3 -c 'import json,sys; print("%.4f" % json.loads(sys.stdin.read())["accuracy"])')
  printf '%-11s %10.1f %9s\n' "$m" "$(echo "$(stat -c %s "$OUT/$m.onnx") / 1024" | bc -l)" "$acc"
done

echo "== latency and throughput (ONNX Runtime CPU, $THREADS threads, 3 alternating rounds, medians)"
for round in 1 2 3; do
  for m in fp32 int8 uint8 int8-uint8; do
    "$BIN/examples/infer_latency" --model "$OUT/$m.onnx" --no-tract --json --threads "$THREADS" \
      --iters 300 --batch-iters 20 | grep '^{' | sed "s|^{|{\"format\":\"$m\",|" >>"$OUT/timings.jsonl"
  done
done
python3 - "$OUT/timings.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["format"], []).append(r)
base = statistics.median(r["images_per_sec"] for r in by["fp32"])
base_p50 = statistics.median(r["p50_ms"] for r in by["fp32"])
print(f"{'format':<11} {'p50 ms (b1)':>12} {'img/s (b64)':>12} {'x fp32 img/s':>13} {'x fp32 p50':>11}")
for name, rs in by.items():
    p50 = statistics.median(r["p50_ms"] for r in rs)
    ips = statistics.median(r["images_per_sec"] for r in rs)
    print(f"{name:<11} {p50:>12.3f} {ips:>12.0f} {ips / base:>13.2f} {base_p50 / p50:>11.2f}")
PY

echo "== where the time goes at batch 64 (ONNX Runtime profiler, $THREADS threads, share of kernel time)"
python3 - "$OUT" "$THREADS" <<'PY'
import collections, json, os, sys
import numpy as np
import onnxruntime as ort
out, threads = sys.argv[1], int(sys.argv[2])
for name in ["fp32", "int8"]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(out, f"profile-{name}")
    s = ort.InferenceSession(os.path.join(out, f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((64, 3, 64, 64), dtype=np.float32)
    for _ in range(10):
        s.run(None, {s.get_inputs()[0].name: x})
    events = json.load(open(s.end_profiling()))
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    top = ", ".join(f"{op} {100 * d / total:.0f}%" for op, d in per_op.most_common(8))
    print(f"{name}: {total / 10 / 1000:.1f} ms per batch in kernels; {top}")
PY

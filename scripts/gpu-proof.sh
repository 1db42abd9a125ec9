#!/usr/bin/env bash
# The GPU proof (issue "The GPU box, measured") on a lent machine, in calls that
# fit the device tool: what travels per call is capped (64 MiB), and the CUDA
# build of ONNX Runtime alone is ~190 MB compressed, so the training phase starts
# in the background on the first call and runs on the GPU while the next calls
# bring the ONNX Runtime pieces; the last call waits for it and runs the
# provider phase. Every call leaves the results so far in OUT.
#
#   scripts/gpu-proof.sh pack BUNDLE            here: stripped release binaries, COCO-5, ONNX Runtime GPU pieces
#   scripts/gpu-proof.sh start BUNDLE OUT [--dry]   there: unpack, start the training phase (setsid), collect
#   scripts/gpu-proof.sh piece OUT FILE...      there: keep ONNX Runtime pieces, collect
#   scripts/gpu-proof.sh finish OUT [--dry]     there: wait for training, unpack ONNX Runtime, provider phase, collect
#
# GPU_WORK (default /tmp/vit-gpu) holds everything there. --dry runs the same
# steps on this CPU with tiny sizes (the rehearsal). Each step's exit status is
# recorded in results/steps.tsv and a failed step is named in results/status.txt
# and makes `finish` exit 1: a rare machine is never spent on a silent gap.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
WORK="${GPU_WORK:-/tmp/vit-gpu}"
R="$WORK/results"
say() { echo "[gpu-proof] $*" >&2; }
die() { echo "[gpu-proof] error: $*" >&2; exit 1; }
cmd="${1:-}"; shift || true

# ---------------------------------------------------------------- here
if [ "$cmd" = pack ]; then
  set -e
  BUNDLE="${1:?usage: gpu-proof.sh pack BUNDLE}"
  source scripts/env.sh
  mkdir -p "$BUNDLE/stage"
  B="$CARGO_TARGET_DIR/release"
  for f in "$B/vit-train" "$B/vit-infer" "$B/examples/train_steps" "$B/examples/infer_latency"; do
    [ -x "$f" ] || die "$f missing: cargo build --release -p vit-train --bin vit-train --example train_steps --example infer_latency; cargo build --release -p vit --features cli --bin vit-infer"
    strip -o "$BUNDLE/stage/$(basename "$f")" "$f"
  done
  tar -C "$BUNDLE/stage" -cf - . | xz -9e -T1 >"$BUNDLE/bin.tar.xz"
  tar -C "${VIT_COCO5:-../shared/data/coco5}/.." -cf - coco5 | gzip -6 >"$BUNDLE/coco5.tgz"
  [ -n "${VIT_ORT_GPU_DYLIB:-}" ] || die "no onnxruntime-gpu beside the venv (scripts/setup.sh)"
  capi="$(dirname "$VIT_ORT_GPU_DYLIB")"
  if [ ! -s "$BUNDLE/ort-gpu.tar.xz" ]; then
    tar -C "$capi/../.." -cf - onnxruntime/capi/libonnxruntime.so.1.31.1 onnxruntime/capi/libonnxruntime_providers_shared.so \
      onnxruntime/capi/libonnxruntime_providers_cuda.so | xz -9 -T2 >"$BUNDLE/ort-gpu.tar.xz"
  fi
  rm -rf "$BUNDLE/stage"
  # Piece 1 travels with the binaries and the data; the others alone (~60 MiB each).
  first=$(( 60 * 1024 * 1024 - $(stat -c %s "$BUNDLE/bin.tar.xz") - $(stat -c %s "$BUNDLE/coco5.tgz") ))
  rm -f "$BUNDLE"/ort.*
  head -c "$first" "$BUNDLE/ort-gpu.tar.xz" >"$BUNDLE/ort.1"
  tail -c +"$(( first + 1 ))" "$BUNDLE/ort-gpu.tar.xz" | split -b 60M -d -a 1 --numeric-suffixes=2 - "$BUNDLE/ort."
  sha256sum "$BUNDLE/ort-gpu.tar.xz" | cut -d' ' -f1 >"$BUNDLE/ort.sha256"
  ls -l "$BUNDLE"
  exit 0
fi

# ---------------------------------------------------------------- there
DRY=0
for a in "$@"; do [ "$a" = --dry ] && DRY=1; done
BIN="$WORK/bin"
DATA="$WORK/coco5"
mkdir -p "$R/logs" "$WORK/pieces"
[ "$DRY" = 1 ] && touch "$R/dry"

# Results so far into OUT: one archive (the device tool returns few files) and the status.
collect() {
  local out="$1"
  mkdir -p "$out"
  status >"$R/status.txt"
  cp "$R/status.txt" "$out/status.txt"
  tar -C "$WORK" -czf "$out/results.tar.gz" --exclude='*.safetensors' --exclude='results/bench/*/model.onnx' results
  ls -l "$out" >&2
  cat "$out/status.txt" >&2
}
status() {
  echo "phase: $(cat "$R/phase" 2>/dev/null || echo none); pieces: $(ls "$WORK/pieces" 2>/dev/null | tr '\n' ' ')"
  [ -f "$R/steps.tsv" ] && awk -F'\t' '{printf "%-44s %4s %8.1f s\n", $1, $2, $4 - $3}' "$R/steps.tsv"
  local failed
  failed=$(awk -F'\t' '$2 != 0 {print $1}' "$R/steps.tsv" 2>/dev/null | tr '\n' ' ')
  [ -n "$failed" ] && echo "FAILED steps: $failed"
  return 0
}
# One step: its log in logs/NAME.log, its exit status and times in steps.tsv.
run_step() {
  local name="$1"; shift
  local t0=$(date +%s.%N) rc
  say "step $name: $*"
  "$@" >"$R/logs/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$(date +%s.%N)" >>"$R/steps.tsv"
  [ "$rc" = 0 ] || { say "step $name FAILED ($rc): tail of its log:"; tail -n 5 "$R/logs/$name.log" >&2; }
  return "$rc"
}

setup_env() {
  export PATH="$BIN:$PATH"
  if [ "$DRY" = 1 ]; then
    source scripts/env.sh
    PY="$VIT_VENV/bin/python"; DEVICE=cpu
  else
    PY="$(command -v python3)"; DEVICE=cuda
    local torch_lib
    torch_lib=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  export PY DEVICE
}

# ---- the training phase (background, started by `start`)
bench_config() {
  local config="$1" name; name=$(basename "$config" .toml)
  local run="$R/bench/$name" rounds="$2" steps="$3" warmup="$4"
  mkdir -p "$R/bench"
  rm -rf "$run"
  run_step "prep-$name" vit-train fit --config "$config" --data "$DATA" --out "$run" --epochs 1 --max-per-class 4 \
    --device cpu --quiet || return
  run_step "check-$name" "$PY" bench/pytorch_reference.py "$run" --check-only || return
  local round precision opt ref
  for round in $(seq "$rounds"); do
    for precision in fp32 bf16; do
      for opt in per-tensor fused; do
        ref=default; [ "$opt" = fused ] && ref=fused
        local fused=false; [ "$opt" = fused ] && fused=true
        run_step "ours-$name-$precision-$opt-r$round" train_steps --run "$run" --device "$DEVICE" --threads 8 \
          --precision "$precision" --fused-optimizer "$fused" --steps "$steps" --warmup "$warmup"
        grep '^{' "$R/logs/ours-$name-$precision-$opt-r$round.log" | sed "s/^{/{\"side\":\"ours\",\"config\":\"$name\",\"opt\":\"$opt\",\"round\":$round,/" >>"$R/bench.jsonl"
        run_step "torch-$name-$precision-$opt-r$round" "$PY" bench/pytorch_reference.py "$run" --skip-check --device "$DEVICE" \
          --threads 8 --precision "$precision" --optimizer-impl "$ref" --steps "$steps" --warmup "$warmup"
        grep '^{' "$R/logs/torch-$name-$precision-$opt-r$round.log" | sed "s/^{/{\"side\":\"torch\",\"config\":\"$name\",\"opt\":\"$opt\",\"round\":$round,/" >>"$R/bench.jsonl"
      done
    done
  done
}

train_phase() {
  setup_env
  echo training >"$R/phase"
  local epochs=30 fit_extra=() small=() rounds=2 steps=40 warmup=10 backend=nccl
  if [ "$DRY" = 1 ]; then
    epochs=1; fit_extra=(--max-per-class 10); small=(--max-per-class 10); rounds=1; steps=2; warmup=1; backend=gloo
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$R/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw,clocks.sm --format=csv,noheader,nounits \
      -lms 250 >"$R/smi.csv" 2>/dev/null &
  fi
  run_step env "$PY" -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))'
  # 1. Training steps, ours vs PyTorch eager, alternated.
  # (The rehearsal skips the GPU preset's steps: batch 256 in bf16 takes minutes on a CPU.)
  [ "$DRY" = 1 ] || bench_config models/coco5-vit-gpu.toml "$rounds" "$steps" "$warmup"
  bench_config models/coco5-vit.toml "$rounds" "$steps" "$warmup"
  # 1b. The GPU trainer's switches (device-resident data, capturable fused AdamW, CUDA-graph replay), in whole
  #     epochs of the GPU preset: every switch off (the path of the first GPU session), each alone, all on.
  local sw
  for sw in "off:--data-mode memory --fused-optimizer false --cuda-graph false" \
            "device:--data-mode device --fused-optimizer false --cuda-graph false" \
            "graph:--data-mode memory --fused-optimizer true --cuda-graph true" \
            "on:--data-mode device --fused-optimizer true --cuda-graph true"; do
    # shellcheck disable=SC2086
    run_step "fit-switches-${sw%%:*}" vit-train fit --config models/coco5-vit-gpu.toml --data "$DATA" \
      --out "$R/fit-switches-${sw%%:*}" --epochs 3 --warmup-epochs 1 --precision bf16 --device "$DEVICE" \
      --data-workers 12 --no-export "${small[@]}" ${sw#*:}
  done
  # 2. Real training: the CPU preset's whole schedule in fp32 (exported: the
  #    artefact the provider phase evaluates and that comes back) and in bf16.
  run_step fit-fp32 vit-train fit --config models/coco5-vit.toml --data "$DATA" --out "$R/fit-fp32" --epochs "$epochs" \
    --device "$DEVICE" --data-workers 8 "${fit_extra[@]}"
  run_step fit-bf16 vit-train fit --config models/coco5-vit.toml --data "$DATA" --out "$R/fit-bf16" --epochs "$epochs" \
    --device "$DEVICE" --precision bf16 --data-workers 8 --no-export "${fit_extra[@]}"
  # 3. torchrun at world size 1 (NCCL on the GPU) against the same run without it.
  run_step fit-plain vit-train fit --config models/coco5-vit.toml --data "$DATA" --out "$R/fit-plain" --epochs 2 \
    --device "$DEVICE" --no-export --log-every 10 "${small[@]}"
  run_step fit-torchrun "$(dirname "$PY")/torchrun" --standalone --nproc-per-node 1 --no-python vit-train fit \
    --config models/coco5-vit.toml --data "$DATA" --out "$R/fit-torchrun" --epochs 2 --device "$DEVICE" --no-export \
    --log-every 10 --dist-backend "$backend" "${small[@]}"
  run_step compare-torchrun "$PY" - "$R/fit-plain/metrics.jsonl" "$R/fit-torchrun/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(f) if l.strip()] for f in sys.argv[1:])
la = [r["loss"] for r in a if r["kind"] == "step"]; lb = [r["loss"] for r in b if r["kind"] == "step"]
ea = [r["train_loss"] for r in a if r["kind"] == "epoch"]; eb = [r["train_loss"] for r in b if r["kind"] == "epoch"]
assert ea and len(la) == len(lb) and len(ea) == len(eb), ("records", len(la), len(lb), len(ea), len(eb))
rel = lambda x, y: abs(x - y) / max(abs(x), 1e-9)
# On a GPU two runs of one seed drift apart by rounding (atomics in the backward,
# BatchNorm amplifies it: measured 7e-7 relative on the first window, 2e-2 after
# two epochs), so the decisive check is the first logged window (another data
# order or a wrong gradient average changes it by far more than 1e-4) and the
# epoch losses within 1e-2.
first = rel((la or ea)[0], (lb or eb)[0])
epochs = max(rel(x, y) for x, y in zip(ea, eb))
d = max(rel(x, y) for x, y in zip(la + ea, lb + eb))
print(json.dumps({"step_losses": len(la), "first_window_relative_difference": first,
                  "epoch_loss_max_relative_difference": epochs, "max_relative_difference": d, "plain": la, "torchrun": lb}))
sys.exit(0 if first < 1e-4 and epochs < 1e-2 else 1)
PY
  # 4. The GPU preset in a real fit (the producer feeding the GPU), a few epochs.
  run_step fit-gpu-preset vit-train fit --config models/coco5-vit-gpu.toml --data "$DATA" --out "$R/fit-gpu-preset" \
    --epochs 5 --warmup-epochs 1 --device "$DEVICE" --data-workers 12 --no-export "${small[@]}"
  # 5. PyTorch's best: torch.compile (reduce-overhead: CUDA graphs) on the GPU preset.
  if [ "$DRY" = 0 ] && [ -d "$R/bench/coco5-vit-gpu" ]; then
    for precision in fp32; do
      run_step "torch-compile-$precision" timeout 240 "$PY" bench/pytorch_reference.py "$R/bench/coco5-vit-gpu" --skip-check \
        --device "$DEVICE" --threads 8 --precision "$precision" --optimizer-impl fused --compile reduce-overhead \
        --steps "$steps" --warmup "$(( warmup + 20 ))"
      grep '^{' "$R/logs/torch-compile-$precision.log" | sed 's/^{/{"side":"torch-compile","config":"coco5-vit-gpu","opt":"fused","round":1,/' >>"$R/bench.jsonl"
    done
  fi
  [ -n "$(jobs -p)" ] && kill $(jobs -p) 2>/dev/null
  echo trained >"$R/phase"
}

# ---- the provider phase (`finish`)
provider_phase() {
  setup_env
  echo provider >"$R/phase"
  local ort="$WORK/ort" capi
  if [ "$DRY" = 1 ]; then
    capi="$(dirname "$VIT_ORT_GPU_DYLIB")"
  else
    rm -rf "$ort"; mkdir -p "$ort"
    run_step ort-unpack "$PY" - "$WORK/pieces" "$ort" <<'PY' || return
import glob, hashlib, io, lzma, os, sys, tarfile
pieces = sorted(glob.glob(os.path.join(sys.argv[1], "ort.[0-9]*")), key=lambda p: int(p.rsplit(".", 1)[1]))
print("pieces:", pieces)
data = b"".join(open(p, "rb").read() for p in pieces)
want = open(os.path.join(sys.argv[1], "ort.sha256")).read().strip()
if hashlib.sha256(data).hexdigest() != want:
    sys.exit(f"ONNX Runtime pieces {pieces}: sha256 {hashlib.sha256(data).hexdigest()} != {want} (a piece is missing or cut)")
tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))).extractall(sys.argv[2])
PY
    capi="$ort/onnxruntime/capi"
    # The CUDA libraries the provider needs are torch's: nvidia/*/lib beside onnxruntime/.
    ln -sfn "$("$PY" -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0] + "/"))')" "$ort/nvidia"
  fi
  local check_args=(--run "$R/fit-fp32" --provider-dir "$capi")
  [ "$DRY" = 1 ] && check_args+=(--dry)
  VIT_TRAIN="$BIN/vit-train" VIT_INFER="$BIN/vit-infer" INFER_LATENCY="$BIN/infer_latency" VIT_COCO5="$DATA" PYTHON="$PY" \
    run_step gpu-check scripts/gpu-check.sh "$R/check" "${check_args[@]}"
  echo done >"$R/phase"
}

case "$cmd" in
  start)
    BUNDLE="${1:?usage: gpu-proof.sh start BUNDLE OUT [--dry]}"; OUT="${2:?OUT}"
    rm -rf "$R" "$BIN" "$DATA"; mkdir -p "$R/logs" "$BIN" "$WORK/pieces"
    [ "$DRY" = 1 ] && touch "$R/dry"
    xz -dc "$BUNDLE/bin.tar.xz" | tar -C "$BIN" -xf - || die "cannot unpack $BUNDLE/bin.tar.xz"
    tar -C "$WORK" -xzf "$BUNDLE/coco5.tgz" || die "cannot unpack $BUNDLE/coco5.tgz"
    cp "$BUNDLE"/ort.[0-9]* "$BUNDLE/ort.sha256" "$WORK/pieces/" 2>/dev/null
    # The repo's scripts and bench/ are needed by the phases: keep a copy beside the results.
    rm -rf "$WORK/repo"; mkdir -p "$WORK/repo"; cp -r scripts bench models "$WORK/repo/"
    echo started >"$R/phase"
    setsid nohup bash "$WORK/repo/scripts/gpu-proof.sh" _train "$@" >"$R/train-phase.log" 2>&1 </dev/null &
    echo $! >"$R/train.pid"
    sleep "${GPU_START_WAIT:-25}"
    tail -n 20 "$R/train-phase.log" >&2
    collect "$OUT" ;;
  _train)
    cd "$WORK/repo" && train_phase ;;
  piece)
    OUT="${1:?usage: gpu-proof.sh piece OUT FILE...}"; shift
    for f in "$@"; do [ "$f" = --dry ] || cp "$f" "$WORK/pieces/" || die "cannot keep $f"; done
    collect "$OUT" ;;
  finish)
    OUT="${1:?usage: gpu-proof.sh finish OUT [--dry]}"
    # Waits for the training phase; past GPU_WAIT seconds it stops what is left
    # of it (the optional last steps) so the provider phase still runs in this call.
    WAIT="${GPU_WAIT:-420}"
    until [ "$(cat "$R/phase" 2>/dev/null)" = trained ]; do
      if [ "$WAIT" -le 0 ]; then
        say "the training phase is still running after ${GPU_WAIT:-420}s: stopping it"
        kill -- -"$(cat "$R/train.pid")" 2>/dev/null
        printf 'train-phase-stopped\t1\t%s\t%s\n' "$(date +%s)" "$(date +%s)" >>"$R/steps.tsv"
        [ -f "$R/fit-fp32/model.onnx" ] || { say "no exported model yet: provider phase not started"; collect "$OUT"; exit 1; }
        break
      fi
      sleep 5; WAIT=$(( WAIT - 5 ))
    done
    (cd "$WORK/repo" && provider_phase)
    collect "$OUT"
    grep -q FAILED "$OUT/status.txt" && exit 1
    exit 0 ;;
  *) die "usage: gpu-proof.sh pack|start|piece|finish ..." ;;
esac

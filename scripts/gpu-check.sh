#!/usr/bin/env bash
# The GPU proof, in one run with a deadline: trains models/coco5-vit.toml for a
# few epochs on CUDA, exports it, evaluates COCO-5 val with `vit-infer --ep cuda`
# and with the CPU provider (accuracy and per-image probabilities compared),
# times batch-1 latency (p50/p99) and batch-64 throughput for the CUDA provider,
# the CPU provider and PyTorch eager on the same GPU (the same network, random
# weights), and writes OUT_DIR/gpu-check.json.
#
#   scripts/gpu-check.sh OUT_DIR [--dry] [--provider-dir DIR] [--epochs N] [--deadline SECONDS] [--run DIR]
#
# --run DIR: evaluate and time an existing run folder (its model.onnx,
#   config.toml, summary.json) instead of training one.
# --provider-dir DIR: a folder holding libonnxruntime.so.* and
#   libonnxruntime_providers_cuda.so (e.g. the onnxruntime-gpu wheel's
#   onnxruntime/capi), used instead of the venv's ONNX Runtime; the CUDA
#   libraries still come from VIT_CUDA_LIB_DIR, the venv, CUDA_HOME or the system.
# --dry: everything but CUDA, on this CPU machine (CPU training on 10 images per
#   class, CPU provider, short timings), ending with the same JSON.
# VIT_TRAIN, VIT_INFER, INFER_LATENCY: prebuilt binaries (else cargo builds them);
# PYTHON: the python3 with torch for the PyTorch eager timings.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=""; DRY=0; PROVIDER_DIR=""; EPOCHS=3; DEADLINE=540; RUN_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --provider-dir) PROVIDER_DIR="$2"; shift ;;
    --epochs) EPOCHS="$2"; shift ;;
    --deadline) DEADLINE="$2"; shift ;;
    --run) RUN_DIR="$2"; shift ;;
    -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "usage: scripts/gpu-check.sh OUT_DIR [--dry] [--provider-dir DIR] [--epochs N] [--deadline S]" >&2; exit 2; }
source scripts/env.sh
say() { echo "[gpu-check] $*" >&2; }
die() { echo "[gpu-check] error: $*" >&2; exit 1; }
END=$(( $(date +%s) + DEADLINE ))
# Runs a step with what is left of the deadline.
step() {
  local left=$(( END - $(date +%s) ))
  [ "$left" -gt 5 ] || die "deadline of ${DEADLINE}s reached before: $*"
  timeout "$left" "$@" || die "step failed (status $?): $*"
}
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
DATA="${VIT_COCO5:-../shared/data/coco5}"
[ -d "$DATA/val" ] || die "COCO-5 not found at $DATA (set VIT_COCO5)"

# ONNX Runtime for the CUDA runs: the given folder, else the GPU build beside the
# venv (scripts/setup.sh), else the venv's own (onnxruntime-gpu after setup.sh --gpu).
CPU_ORT="${ORT_DYLIB_PATH:-}"
if [ -n "$PROVIDER_DIR" ]; then
  CUDA_ORT=$(ls "$PROVIDER_DIR"/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
  [ -n "$CUDA_ORT" ] || die "no libonnxruntime.so.* in $PROVIDER_DIR"
  [ -e "$PROVIDER_DIR/libonnxruntime_providers_cuda.so" ] || die "no libonnxruntime_providers_cuda.so in $PROVIDER_DIR"
elif [ "$DRY" = 0 ]; then
  CUDA_ORT="${ORT_DYLIB_PATH:-}"
else
  CUDA_ORT="${VIT_ORT_GPU_DYLIB:-${ORT_DYLIB_PATH:-}}"
fi
# The CPU provider: the venv's build, else the same library as the CUDA runs.
CPU_ORT="${CPU_ORT:-$CUDA_ORT}"
[ -n "$CUDA_ORT" ] || die "no ONNX Runtime library (scripts/setup.sh, or --provider-dir)"
PYTHON="${PYTHON:-python3}"
if [ "$DRY" = 1 ]; then EP=cpu; DEVICE=cpu; EPOCHS=1; ITERS=20; BATCH_ITERS=3; else EP=cuda; DEVICE=cuda; ITERS=300; BATCH_ITERS=30; fi

if [ -z "${VIT_TRAIN:-}" ] || [ -z "${VIT_INFER:-}" ] || [ -z "${INFER_LATENCY:-}" ]; then
  say "building vit-train, vit-infer and the infer_latency example"
  step cargo build -q -p vit-train --bin vit-train --example infer_latency
  step cargo build -q -p vit --features cli --bin vit-infer
fi
VIT_TRAIN="${VIT_TRAIN:-$CARGO_TARGET_DIR/debug/vit-train}"
VIT_INFER="${VIT_INFER:-$CARGO_TARGET_DIR/debug/vit-infer}"
INFER_LATENCY="${INFER_LATENCY:-$CARGO_TARGET_DIR/debug/examples/infer_latency}"

GPU_NAME="none"
command -v nvidia-smi >/dev/null && GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1 || echo none)
say "GPU: $GPU_NAME; ONNX Runtime for CUDA: $CUDA_ORT"

# 1. Would CUDA start? (The dry run records the answer, a real run needs a yes.)
set +e
ORT_DYLIB_PATH="$CUDA_ORT" "$VIT_INFER" --check-gpu --json >"$OUT/check-gpu.json"; CHECK=$?
set -e
if [ "$DRY" = 0 ] && [ "$CHECK" != 0 ]; then
  ORT_DYLIB_PATH="$CUDA_ORT" "$VIT_INFER" --check-gpu >&2 || true
  die "the CUDA provider would not start (report above)"
fi

# 2. Train and export (or take the given run).
if [ -n "$RUN_DIR" ]; then
  RUN="$(cd "$RUN_DIR" && pwd)" || die "--run $RUN_DIR: no such folder"
else
  RUN="$OUT/run"
  TRAIN_ARGS=(--config models/coco5-vit.toml --data "$DATA" --out "$RUN" --epochs "$EPOCHS" --device "$DEVICE" --quiet)
  [ "$DRY" = 1 ] && TRAIN_ARGS+=(--max-per-class 10)
  rm -rf "$RUN"
  say "training ($DEVICE, $EPOCHS epoch(s))"
  step "$VIT_TRAIN" fit "${TRAIN_ARGS[@]}" >&2
fi
MODEL="$RUN/model.onnx"
[ -f "$MODEL" ] || die "no $MODEL after training"

# 3. Evaluate with both providers; the dry run uses 20 images per class.
EVAL_DIR="$DATA/val"
if [ "$DRY" = 1 ]; then
  EVAL_DIR="$OUT/val-subset"; rm -rf "$EVAL_DIR"
  for c in "$DATA"/val/*/; do
    mkdir -p "$EVAL_DIR/$(basename "$c")"
    files=("$(cd "$c" && pwd)"/*)
    ln -s "${files[@]:0:20}" "$EVAL_DIR/$(basename "$c")/"
  done
fi
say "evaluating $EVAL_DIR with the $EP and the CPU provider"
ORT_DYLIB_PATH="$CUDA_ORT" step "$VIT_INFER" -m "$MODEL" --ep "$EP" --eval "$EVAL_DIR" --json >"$OUT/eval-cuda.json"
ORT_DYLIB_PATH="$CPU_ORT" step "$VIT_INFER" -m "$MODEL" --ep cpu --eval "$EVAL_DIR" --json >"$OUT/eval-cpu.json"
ORT_DYLIB_PATH="$CUDA_ORT" step "$VIT_INFER" -m "$MODEL" --ep "$EP" -k 5 --batch-size 64 --json "$EVAL_DIR" >"$OUT/probs-cuda.jsonl"
ORT_DYLIB_PATH="$CPU_ORT" step "$VIT_INFER" -m "$MODEL" --ep cpu -k 5 --batch-size 64 --json "$EVAL_DIR" >"$OUT/probs-cpu.jsonl"

# 4. Latency and throughput: ONNX Runtime on each provider, PyTorch eager.
say "timing the $EP provider, the CPU provider and PyTorch eager"
ORT_DYLIB_PATH="$CUDA_ORT" step "$INFER_LATENCY" --model "$MODEL" --ep "$EP" --no-tract --json \
  --iters "$ITERS" --batch-iters "$BATCH_ITERS" | grep '^{' >"$OUT/latency-cuda.jsonl"
ORT_DYLIB_PATH="$CPU_ORT" step "$INFER_LATENCY" --model "$MODEL" --ep cpu --no-tract --json \
  --iters "$ITERS" --batch-iters "$BATCH_ITERS" | grep '^{' >"$OUT/latency-cpu.jsonl"
# PyTorch eager: the run's network (stem, blocks, locality attention, mean
# pooling, test-time flip) rebuilt in torch with random weights: the same
# shapes and operations, so the same work per image.
step "$PYTHON" - "$RUN/config.toml" "$DEVICE" "$ITERS" "$BATCH_ITERS" >"$OUT/latency-torch.json" <<'PY'
import json, math, sys, time, tomllib
import torch
from torch import nn
cfg = tomllib.load(open(sys.argv[1], "rb")); dev = torch.device(sys.argv[2]); iters, batch_iters = int(sys.argv[3]), int(sys.argv[4])
E, H, C, S = cfg["embed_dim"], cfg["num_heads"], cfg["in_channels"], cfg["image_size"]
class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.norm1, s.norm2 = nn.LayerNorm(E, eps=cfg["layer_norm_eps"]), nn.LayerNorm(E, eps=cfg["layer_norm_eps"])
        s.qkv, s.proj = nn.Linear(E, 3 * E, bias=cfg.get("qkv_bias", True)), nn.Linear(E, E)
        s.scale = nn.Parameter(torch.full((H, 1, 1), (E // H) ** -0.5))
        hidden = int(E * cfg["mlp_ratio"])
        s.mlp = nn.Sequential(nn.Linear(E, hidden), nn.GELU(), nn.Linear(hidden, E))
    def forward(s, x):
        b, n, _ = x.shape
        q, k, v = s.qkv(s.norm1(x)).reshape(b, n, 3, H, E // H).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1)) * s.scale
        if cfg.get("locality_attention"):
            a = a - 1e9 * torch.eye(n, device=x.device)
        x = x + s.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, E))
        return x + s.mlp(s.norm2(x))
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        layers, c = [], C
        if cfg.get("stem") == "conv":
            for out, st in zip(cfg["stem_channels"], cfg["stem_strides"]):
                layers += [nn.Conv2d(c, out, 3, st, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]; c = out
            layers.append(nn.Conv2d(c, E, 1))
        else:
            layers.append(nn.Conv2d(c, E, cfg["patch_size"], cfg["patch_size"]))
        s.embed = nn.Sequential(*layers)
        n = (S // cfg["patch_size"]) ** 2 + 1
        s.cls, s.pos = nn.Parameter(torch.zeros(1, 1, E)), nn.Parameter(torch.zeros(1, n, E))
        s.blocks = nn.Sequential(*[Block() for _ in range(cfg["depth"])])
        s.norm, s.head = nn.LayerNorm(E, eps=cfg["layer_norm_eps"]), nn.Linear(E, cfg["num_classes"])
    def logits(s, x):
        t = s.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([s.cls.expand(len(t), -1, -1), t], 1) + s.pos
        t = s.norm(s.blocks(t))
        return s.head(t.mean(1) if cfg.get("pooling") == "mean" else t[:, 0])
    def forward(s, x):
        if not cfg.get("test_time_flip"):
            return s.logits(x)
        y = s.logits(torch.cat([x, x.flip(-1)]))
        return (y[: len(x)] + y[len(x):]) / 2
net = Net().to(dev).eval()
def timed(batch, warmup, n):
    x = torch.randn(batch, C, S, S, device=dev); ms = []
    with torch.inference_mode():
        for i in range(warmup + n):
            t = time.perf_counter(); net(x)
            if dev.type == "cuda": torch.cuda.synchronize()
            if i >= warmup: ms.append((time.perf_counter() - t) * 1e3)
    return sorted(ms)
one, big = timed(1, 20, iters), timed(64, 3, batch_iters)
q = lambda v, p: v[min(len(v), max(1, math.ceil(p * len(v)))) - 1]  # nearest rank, as infer_latency
print(json.dumps({"engine": "torch-eager", "device": str(dev), "torch": torch.__version__, "p50_ms": q(one, 0.5),
                  "p99_ms": q(one, 0.99), "mean_ms": sum(one) / len(one), "batch": 64,
                  "images_per_sec": 64 * len(big) / (sum(big) / 1e3), "weights": "random"}))
PY

# 5. One JSON of results.
"$PYTHON" - "$OUT" "$DRY" "$GPU_NAME" "$CUDA_ORT" "$PROVIDER_DIR" "$CHECK" "$RUN" <<'PY'
import json, sys
out, dry, gpu, cuda_ort, provider_dir, check_status, run = sys.argv[1:]
load = lambda f: json.load(open(f"{out}/{f}"))
lines = lambda f: [json.loads(l) for l in open(f"{out}/{f}") if l.strip()]
summary, check = json.load(open(f"{run}/summary.json")), load("check-gpu.json")
ev_cuda, ev_cpu = load("eval-cuda.json"), load("eval-cpu.json")
probs = lambda f: {r["path"]: {t["index"]: t["probability"] for t in r["top"]} for r in lines(f)}
pc, pp = probs("probs-cuda.jsonl"), probs("probs-cpu.jsonl")
diff = max(abs(pc[p][i] - pp[p][i]) for p in pc for i in pc[p])
agree = sum(max(pc[p], key=pc[p].get) == max(pp[p], key=pp[p].get) for p in pc) / len(pc)
result = {
    "dry": dry == "1", "gpu": gpu, "onnxruntime_cuda": cuda_ort, "provider_dir": provider_dir or None,
    "check_gpu": {"exit_status": int(check_status), "ready": check["ready"], "problem": check["problem"]},
    "train": {k: summary[k] for k in ("device", "epochs", "val_accuracy", "train_images_per_sec", "wall_seconds", "train_images")},
    "eval": {
        "cuda_provider": {k: ev_cuda[k] for k in ("provider", "accuracy", "total")},
        "cpu_provider": {k: ev_cpu[k] for k in ("provider", "accuracy", "total")},
        "accuracy_difference": ev_cuda["accuracy"] - ev_cpu["accuracy"],
        "images_compared": len(pc), "top1_agreement": agree, "max_abs_probability_difference": diff,
    },
    "latency": {"ort_cuda": lines("latency-cuda.jsonl")[0], "ort_cpu": lines("latency-cpu.jsonl")[0], "torch_eager": load("latency-torch.json")},
}
json.dump(result, open(f"{out}/gpu-check.json", "w"), indent=2)
print(json.dumps(result, indent=2))
PY
say "wrote $OUT/gpu-check.json"

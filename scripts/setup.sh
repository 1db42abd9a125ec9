#!/usr/bin/env bash
# Idempotent set-up: Python venv with libtorch (torch==2.11.0) and ONNX Runtime
# (onnxruntime==1.31.1, or onnxruntime-gpu with --gpu) in a cache outside the
# repo, Debian's Fashion-MNIST package and Chromium when apt is available, the
# browser example's npm packages (examples/web: npm ci, onnxruntime-web vendored
# into examples/web/vendor), then a build.
#   scripts/setup.sh [--gpu] [--no-build] [--release] [--demo]
# --demo: only what the demo runs (torch, onnxruntime, the shim's headers,
# Fashion-MNIST; builds vit-train and vit-infer), so the first result comes
# without waiting for what only the tests need (timm, transformers, tensorboard,
# tritonclient, the GPU build of ONNX Runtime, Chromium, npm packages, every
# test binary); the test command installs and builds the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=0; BUILD=1; PROFILE=dev; DEMO=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --no-build) BUILD=0 ;;
    --release) PROFILE=release ;;
    --demo) DEMO=1 ;;
    *) echo "setup: unknown option $arg (use --gpu, --no-build, --release, --demo)" >&2; exit 2 ;;
  esac
done
source scripts/env.sh
say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
command -v python3 >/dev/null || die "python3 not found: install Python 3.10+ first"

mkdir -p "$VIT_CACHE"
# Download the crates while pip downloads the wheels: the build waits for it.
FETCH_PID=""
if [ "$BUILD" = 1 ]; then
  cargo fetch --quiet >"$VIT_CACHE/cargo-fetch.log" 2>&1 &
  FETCH_PID=$!
fi
if [ ! -x "$VIT_VENV/bin/python" ]; then
  say "creating venv $VIT_VENV"
  python3 -m venv "$VIT_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
ORT_PKG=onnxruntime; [ "$GPU" = 1 ] && ORT_PKG=onnxruntime-gpu
# timm and transformers: test-only (checkpoints trained elsewhere), pinned beside torch so pip keeps torch 2.11.0;
# torchvision (with Pillow) is the data-loading anchor of scripts/bench-data.sh, pinned to torch 2.11's release.
want=("torch==2.11.0" "torchvision==0.26.0" "$ORT_PKG==1.31.1" "onnx" "numpy" "timm==1.0.15" "transformers==4.51.3")
# onnxruntime-gpu 1.31.1 is built for CUDA 13: its provider needs libcudart.so.13,
# libcublas(Lt).so.13, libcurand.so.10, libcufft.so.12 and libcudnn.so.9. The
# [cuda,cudnn] extras bring all but cuBLAS, which torch 2.11 already brings
# (nvidia-cublas 13.x); vit-infer finds them in site-packages/nvidia/*/lib.
[ "$GPU" = 1 ] && want=("torch==2.11.0" "torchvision==0.26.0" "onnxruntime-gpu[cuda,cudnn]==1.31.1" "nvidia-cublas>=13,<14" "onnx" "numpy" "timm==1.0.15" "transformers==4.51.3")
# tensorboard: test-only (its event reader checks our event files).
want+=("tensorboard==2.21.0")
# tritonclient[http]: test-only (tests/serve.rs talks to vit-serve as a KServe v2 client does).
want+=("tritonclient[http]==2.73.0")
have() { "$VIT_VENV/bin/python" -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}'; }
if [ "$DEMO" = 1 ]; then
  want=("torch==2.11.0" "$ORT_PKG==1.31.1")
  [ "$GPU" = 1 ] && want=("torch==2.11.0" "onnxruntime-gpu[cuda,cudnn]==1.31.1" "nvidia-cublas>=13,<14")
fi
missing() {
  [ "$(have torch)" != "2.11.0" ] || [ "$(have "$ORT_PKG")" != "1.31.1" ] && return 0
  [ "$DEMO" = 1 ] && return 1
  [ -z "$(have onnx)" ] || [ "$(have torchvision)" != "0.26.0" ] || [ "$(have timm)" != "1.0.15" ] \
    || [ "$(have transformers)" != "4.51.3" ] || [ "$(have tensorboard)" != "2.21.0" ] \
    || [ "$(have tritonclient)" != "2.73.0" ]
}
if missing; then
  if [ "$GPU" = 1 ] && [ -n "$(have onnxruntime)" ]; then
    say "replacing onnxruntime (CPU) with onnxruntime-gpu"
    "$VIT_VENV/bin/python" -m pip uninstall -y -q onnxruntime
  fi
  say "installing ${want[*]} into $VIT_VENV (large download the first time)"
  "$VIT_VENV/bin/python" -m pip install -q "${want[@]}" || die "pip install failed: check access to PyPI"
else
  say "venv ready: torch $(have torch), $ORT_PKG $(have "$ORT_PKG")"
fi
# Headers only, for the C++ shim's NCCL process group: ProcessGroupNCCL includes the CUDA
# runtime headers (nvidia-cuda-runtime, with torch), which need crt/ and CCCL's nv/target;
# matched to torch 2.11's CUDA 13.0. Without them vit-train builds with Gloo only.
if [ "$(have nvidia-cuda-crt)" != "13.0.88" ] || [ "$(have nvidia-cuda-cccl)" != "13.0.85" ]; then
  say "installing the CUDA crt and CCCL headers (NCCL process group)"
  "$VIT_VENV/bin/python" -m pip install -q "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85" \
    || die "pip install of the CUDA headers failed: check access to PyPI"
fi
source scripts/env.sh   # picks up ORT_DYLIB_PATH now that it exists
[ -n "${ORT_DYLIB_PATH:-}" ] || die "libonnxruntime.so not found in $VIT_VENV"

# The GPU build of ONNX Runtime, apart from the venv (which keeps its own), for
# the tests of the CUDA start-up on machines without a GPU (tests/cuda.rs).
ORT_GPU_DIR="$VIT_CACHE/ort-gpu"
if [ "$DEMO" = 0 ] && [ ! -d "$ORT_GPU_DIR/onnxruntime_gpu-1.31.1.dist-info" ]; then
  say "installing onnxruntime-gpu 1.31.1 (library only) into $ORT_GPU_DIR"
  rm -rf "$ORT_GPU_DIR"
  "$VIT_VENV/bin/python" -m pip install -q --no-deps --target "$ORT_GPU_DIR" "onnxruntime-gpu==1.31.1" \
    || die "pip install onnxruntime-gpu --target $ORT_GPU_DIR failed: check access to PyPI"
fi
source scripts/env.sh   # picks up VIT_ORT_GPU_DYLIB
[ "$DEMO" = 1 ] || [ -n "${VIT_ORT_GPU_DYLIB:-}" ] || die "libonnxruntime.so not found in $ORT_GPU_DIR"

# Gloo's headers for the C++ shim's c10d process group (the torch wheel ships c10d's, not Gloo's).
if [ ! -e /usr/include/gloo/config.h ]; then
  if command -v apt-get >/dev/null; then
    say "installing Debian package libgloo-dev"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libgloo-dev >/dev/null \
      || die "apt-get install libgloo-dev failed"
  else
    die "Gloo headers missing (/usr/include/gloo): install libgloo-dev"
  fi
fi

if [ ! -e "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && [ ! -e "$FASHION_MNIST_DIR/train-images-idx3-ubyte" ]; then
  if command -v apt-get >/dev/null; then
    say "installing Debian package dataset-fashion-mnist"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || die "apt-get install dataset-fashion-mnist failed"
  else
    say "warning: no apt-get; Fashion-MNIST not installed (set FASHION_MNIST_DIR to IDX files)"
  fi
fi

# Chromium runs the browser example's test (tests/web_page.rs) headless.
if [ "$DEMO" = 0 ] && ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing Debian package chromium"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
  else
    say "warning: no apt-get; Chromium not installed (tests/web_page.rs needs /usr/bin/chromium)"
  fi
fi

# The browser example: onnxruntime-web and puppeteer-core at the versions of
# package-lock.json; the runtime files the page loads are copied into vendor/
# (git-ignored), so the page needs no CDN.
WEB=examples/web
if [ "$DEMO" = 1 ]; then
  :
elif command -v npm >/dev/null; then
  if [ ! -d "$WEB/node_modules" ] || [ "$WEB/package-lock.json" -nt "$WEB/node_modules/.package-lock.json" ]; then
    say "npm ci in $WEB"
    (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $WEB failed"
  fi
  mkdir -p "$WEB/vendor"
  for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
    cmp -s "$WEB/node_modules/onnxruntime-web/dist/$f" "$WEB/vendor/$f" \
      || cp "$WEB/node_modules/onnxruntime-web/dist/$f" "$WEB/vendor/$f" || die "cannot vendor $f"
  done
else
  say "warning: no npm (node 20); the browser example (examples/web) is not set up"
fi

if [ -n "$FETCH_PID" ] && ! wait "$FETCH_PID"; then
  die "cargo fetch failed (check access to crates.io): $(tail -3 "$VIT_CACHE/cargo-fetch.log")"
fi
if [ "$BUILD" = 1 ] && [ "$DEMO" = 1 ]; then
  # Only the demo's two programs; the test command builds everything else.
  # One cargo call, so the `vit` crate is compiled once with both programs' features.
  say "cargo build: vit-train and vit-infer (target dir $CARGO_TARGET_DIR)"
  cargo build -p vit-train --bin vit-train -p vit --bin vit-infer --features vit/cli || die "cargo build failed"
elif [ "$BUILD" = 1 ]; then
  if [ "$PROFILE" = release ]; then
    say "cargo build --release --workspace --all-features --bins (target dir $CARGO_TARGET_DIR)"
    cargo build --release --workspace --all-features --bins || die "cargo build failed"
  else
    # The dev profile compiles dependencies at opt-level 2 (libtorch does the heavy
    # lifting anyway); building through `cargo test --no-run` gives the binaries the
    # same feature set as the test suite, so demo and tests share one build.
    say "cargo test --workspace --all-features --no-run (target dir $CARGO_TARGET_DIR)"
    cargo test --workspace --all-features --no-run || die "cargo build failed"
  fi
fi
if [ "$GPU" = 1 ]; then
  [ -x "$CARGO_TARGET_DIR/debug/vit-infer" ] || cargo build -q -p vit --features cli --bin vit-infer || die "cargo build failed"
  say "vit-infer --check-gpu (ONNX Runtime $ORT_DYLIB_PATH):"
  if "$CARGO_TARGET_DIR/debug/vit-infer" --check-gpu; then
    say "the CUDA execution provider starts: use vit-infer --ep cuda (or auto)"
  else
    say "warning: the CUDA execution provider would not start (see the last line above); vit-infer --ep auto uses the CPU"
  fi
fi
say "done"

# Sourced by the other scripts: where the toolchain's cached pieces live.
# Everything heavy (Python venv with libtorch + ONNX Runtime, cargo target dir)
# is kept outside the repository so clean clones reuse it.
VIT_CACHE="${VIT_CACHE:-$HOME/.cache/vit-toolchain}"
VIT_VENV="$VIT_CACHE/venv"
export VIT_CACHE VIT_VENV
export LIBTORCH_USE_PYTORCH=1
export PATH="$VIT_VENV/bin:$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VIT_CACHE/target}"
VIT_SITE="$("$VIT_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
if [ -n "$VIT_SITE" ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for f in "$VIT_SITE"/onnxruntime/capi/libonnxruntime.so.*; do
    [ -e "$f" ] && export ORT_DYLIB_PATH="$f"
  done
fi
# The GPU build of ONNX Runtime, kept apart from the venv's CPU build for the
# CUDA start-up tests (scripts/setup.sh installs it).
for f in "$VIT_CACHE"/ort-gpu/onnxruntime/capi/libonnxruntime.so.*; do
  [ -e "$f" ] && export VIT_ORT_GPU_DYLIB="$f"
done
FASHION_MNIST_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
export FASHION_MNIST_DIR

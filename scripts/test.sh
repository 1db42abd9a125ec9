#!/usr/bin/env bash
# The test command: set-up (idempotent), then every test of the workspace on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
source scripts/env.sh
echo "[test] cargo test --workspace --all-features (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --all-features -- --test-threads 1

#!/usr/bin/env bash
# The test command: set-up (idempotent), the habits that keep the code tidy
# (format, lints, docs: all warnings are errors), then every test of the
# workspace on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
source scripts/env.sh
echo "[test] cargo fmt --check"
cargo fmt --all --check
echo "[test] cargo clippy -D warnings"
cargo clippy --workspace --all-features --all-targets -- -D warnings
echo "[test] cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet
echo "[test] cargo test --workspace --all-features (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --all-features -- --test-threads 1

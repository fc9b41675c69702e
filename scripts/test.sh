#!/usr/bin/env bash
# Set up (once) and run pickguard's whole test suite: formatting, lints,
# unit and integration tests, and the live tests against real Python,
# torch and numpy. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
eval "$(scripts/setup-test-env.sh)"
cargo fmt --all -- --check
# Every declared dependency is used (what cargo-machete checks).
python3 scripts/check-unused-deps.py
cargo clippy --workspace --all-targets --features pickguard/live --locked -- -D warnings
cargo test --workspace --features pickguard/live --locked "$@"
# The wheel as a Python user gets it: fresh venv, no Rust on PATH, real torch.
scripts/test-wheel.sh

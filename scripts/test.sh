#!/usr/bin/env bash
# Set up (once) and run pickguard's whole test suite: formatting, lints,
# unit and integration tests, and the live tests against real Python,
# torch and numpy. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# A build that runs out of disk fails deep inside the linker: say how much
# there is first. Incremental state is of no use to a one-off run and is a
# third of the debug target's size, so CI (a clean clone) goes without it.
df -h . | tail -1 | awk '{print "disk free for the build: " $4 " of " $2}'
if [ -n "${CI:-}" ] || [ ! -d target/debug ]; then export CARGO_INCREMENTAL=0; fi
scripts/system-deps.sh
eval "$(scripts/setup-test-env.sh)"
cargo fmt --all -- --check
# Every declared dependency is used (what cargo-machete checks).
python3 scripts/check-unused-deps.py
cargo clippy --workspace --all-targets --features pickguard/live --locked -- -D warnings
# The fuzz targets (their own workspace, run by fuzz/run.sh) still build.
cargo check --manifest-path fuzz/Cargo.toml --bins --locked
# docs/rules.md is generated from the rule tables and must match them.
cargo dev docs --check
cargo test --workspace --features pickguard/live --locked "$@"
# The wheel as a Python user gets it: fresh venv, no Rust on PATH, real torch.
scripts/test-wheel.sh

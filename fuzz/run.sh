#!/usr/bin/env bash
# Run each cargo-fuzz target for SECONDS (default 60), seeded with the corpus.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in pickle zip scan gguf onnx hdf5 tfgraph sevenz torchscript; do
  mkdir -p "corpus/$t"
  cp -n ../fixtures/corpus/* "corpus/$t/" 2>/dev/null || true
  rm -f "corpus/$t/manifest.json"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048
done

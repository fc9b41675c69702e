#!/usr/bin/env bash
# Build pickguard and scan the bundled sample corpus (fixtures/corpus):
# real checkpoints and pickles, benign and malicious, made by
# fixtures/gen/make_fixtures.py. Exits 1 because some samples are malicious.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --release --locked --quiet
exec target/release/pickguard scan fixtures/corpus "$@"

#!/usr/bin/env bash
# Build the pickguard wheel: the `pickguard` command and the Python module
# (crates/pickguard-py), linked with zig against glibc 2.17 so one wheel
# (manylinux2014, abi3: CPython 3.9 and later) installs on current
# Debian/Ubuntu/RHEL-family systems. Prints the wheel's path.
#
# The eBPF sensor of `watch` is not in the wheel (it needs libelf, which a
# manylinux wheel cannot assume); the wheel's `pickguard watch` says so.
# Usage: scripts/build-wheel.sh [OUT_DIR]   (default target/wheels)
# PICKGUARD_WHEEL_PROFILE selects the cargo profile (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/wheels}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
venv="$cache/build-venv"
req=scripts/build-requirements.txt
stamp="$venv/.pickguard-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "build-wheel: creating the build venv in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  rm -f "$venv"/.pickguard-*
  touch "$stamp"
fi
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-gnu || true
mkdir -p "$out"
rm -f "$out"/pickguard-*.whl
PATH="$venv/bin:$PATH" "$venv/bin/maturin" build --profile "${PICKGUARD_WHEEL_PROFILE:-release}" --locked \
  --zig --compatibility manylinux2014 \
  -m crates/pickguard-py/Cargo.toml --out "$out" >&2
ls "$out"/pickguard-*.whl

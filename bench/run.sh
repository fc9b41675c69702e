#!/usr/bin/env bash
# pickguard against picklescan, side by side, as whole processes (hyperfine).
# Not part of CI: it builds large inputs. Usage: bench/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
work=bench/work
mkdir -p "$work"
eval "$(scripts/setup-test-env.sh)"              # torch, to make the inputs
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
bvenv="$cache/bench-venv"
if [ ! -x "$bvenv/bin/picklescan" ]; then
  python3 -m venv "$bvenv"
  "$bvenv/bin/pip" install --quiet -r bench/requirements.txt
fi
if ! command -v hyperfine >/dev/null; then
  echo "bench: installing hyperfine (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq hyperfine >/dev/null; else sudo apt-get install -y -qq hyperfine >/dev/null; fi
fi
"$PICKGUARD_PYTHON" bench/make_inputs.py "$work"
cargo build --release --locked --quiet
pg="$PWD/target/release/pickguard scan --no-progress --format json"
ps="$bvenv/bin/picklescan"
# Both tools must agree the inputs are clean before their speed means anything.
for input in big-300.pt many-30000.pt small; do
  $pg "$work/$input" >/dev/null || { echo "pickguard did not report $input clean" >&2; exit 1; }
done
results="$work/results.md"
: > "$results"
for input in big-300.pt many-30000.pt small; do
  hyperfine --warmup 1 --runs "$runs" -N --export-markdown "$work/$input.md" \
    -n pickguard "$pg $work/$input" \
    -n picklescan "$ps -p $work/$input" >&2
  { echo "### $input"; cat "$work/$input.md"; echo; } >> "$results"
done
# Linearity in tensor count: pickguard alone.
hyperfine --warmup 1 --runs "$runs" -N --export-markdown "$work/linearity.md" \
  -n 3000 "$pg $work/many-3000.pt" -n 10000 "$pg $work/many-10000.pt" \
  -n 30000 "$pg $work/many-30000.pt" -n 100000 "$pg $work/many-100000.pt" >&2
{ echo "### pickguard, tensor count"; cat "$work/linearity.md"; } >> "$results"
cat "$results"

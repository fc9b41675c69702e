#!/usr/bin/env bash
# Cost of `pickguard watch` on open() and its detection latency (root).
# Usage: sudo bench/watch.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
work="$PWD/bench/work/watch"
mkdir -p "$work"
scripts/system-deps.sh
eval "$(scripts/setup-test-env.sh)"
command -v gcc >/dev/null || apt-get install -y -qq gcc >/dev/null
gcc -O2 -o "$work/openbench" bench/openbench.c
cp "$work/openbench" "$work/python-openbench"    # a name the sensor treats as Python
cargo build --release --locked --quiet
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
measure() { for i in $(seq 1 "$runs"); do "$1" 1000000; done | median; }
base_other=$(measure "$work/openbench"); base_py=$(measure "$work/python-openbench")
target/release/pickguard watch > "$work/events.jsonl" 2> "$work/watch.err" &
wpid=$!
trap 'kill $wpid 2>/dev/null || true' EXIT
for i in $(seq 1 50); do grep -q ready "$work/watch.err" && break; sleep 0.2; done
with_other=$(measure "$work/openbench"); with_py=$(measure "$work/python-openbench")
# Detection latency: a malicious pickle, loaded 10 times.
cp fixtures/corpus/mal-reduce-os-system-p2.pkl "$work/evil.pth"
printf 'import pickle, sys\npickle.load(open(sys.argv[1], "rb"))\n' > "$work/load.py"
for i in $(seq 1 10); do (cd "$work" && "$PICKGUARD_PYTHON" load.py evil.pth); done
sleep 1
kill $wpid; wait $wpid 2>/dev/null || true
lat=$(grep '"event":"alert"' "$work/events.jsonl" | grep -o '"latency_us":[0-9]*' | cut -d: -f2 | median)
alerts=$(grep -c '"event":"alert"' "$work/events.jsonl" || true)
awk -v bo="$base_other" -v wo="$with_other" -v bp="$base_py" -v wp="$with_py" -v lat="$lat" -v n="$alerts" 'BEGIN {
  printf "open()+close() ns/iteration, median of runs of 1e6:\n"
  printf "  non-Python process: %.1f -> %.1f (+%.2f us per open)\n", bo, wo, (wo-bo)/1000
  printf "  Python-named process: %.1f -> %.1f (+%.2f us per open)\n", bp, wp, (wp-bp)/1000
  printf "detection latency (kernel event to user space), median of %d alerts: %d us\n", n, lat
}' | tee "$work/results.txt"

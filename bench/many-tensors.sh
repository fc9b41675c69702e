#!/usr/bin/env bash
# A torch.save checkpoint of 1 000 000 tensors (the scale scan's default
# budgets are set for), two ways: views of one storage, and one storage per
# tensor (1 000 006 zip members). Times and peak memory of `pickguard scan`
# against `torch.load(weights_only=True)` of the same file, whole processes
# (hyperfine, /usr/bin/time). Making the inputs takes about a minute each.
# Usage: bench/many-tensors.sh [RUNS] [TENSORS]   (defaults 3, 1000000). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
n="${2:-1000000}"
eval "$(scripts/setup-test-env.sh)"
py="$PICKGUARD_PYTHON"
work=bench/work/many-tensors
mkdir -p "$work"
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine
[ -x /usr/bin/time ] || apt-get install -y -qq time
cargo build --release -q
pg=target/release/pickguard
for kind in views separate; do
  f="$work/$kind-$n.pt"
  [ -s "$f" ] || "$py" - "$f" "$n" "$kind" <<'PY'
import sys, torch
path, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "views":
    base = torch.zeros(n)
    sd = {f"layer.{i}.weight": base[i:i + 1] for i in range(n)}
else:
    sd = {f"layer.{i}.weight": torch.zeros(1) for i in range(n)}
torch.save(sd, path)
PY
  # The scan must finish clean under the default budgets.
  "$pg" scan -f json "$f" > "$work/$kind.json" || { echo "scan of $f did not exit 0" >&2; cat "$work/$kind.json" >&2; exit 1; }
done
args=()
for kind in views separate; do
  f="$work/$kind-$n.pt"
  args+=(-n "pickguard scan $kind" "$pg scan $f")
  args+=(-n "torch.load $kind" "$py -c \"import torch; torch.load('$f', weights_only=True)\"")
done
hyperfine --runs "$runs" --export-markdown "$work/times.md" "${args[@]}"
{
  echo "| command | peak RSS (MiB) |"
  echo "|---|---|"
  for kind in views separate; do
    f="$work/$kind-$n.pt"
    kb=$(/usr/bin/time -f %M "$pg" scan "$f" 2>&1 >/dev/null | tail -1)
    echo "| pickguard scan $kind | $((kb / 1024)) |"
    kb=$(/usr/bin/time -f %M "$py" -c "import torch; torch.load('$f', weights_only=True)" 2>&1 >/dev/null | tail -1)
    echo "| torch.load $kind | $((kb / 1024)) |"
  done
} > "$work/memory.md"
cat "$work/times.md" "$work/memory.md"

#!/usr/bin/env bash
# pickguard.load against torch.load(weights_only=True) and
# safetensors.torch.load_file on a 1 GiB state dict: wall time (hyperfine,
# whole processes, each touching every tensor's bytes) and peak memory
# (/usr/bin/time). A baseline process that only imports torch is timed too,
# so the loaders can be compared without interpreter start-up.
# Usage: bench/load.sh [RUNS]   (default 5). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
eval "$(scripts/setup-test-env.sh)"
py="$PICKGUARD_PYTHON"
work=bench/work/load
mkdir -p "$work"
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine
[ -x /usr/bin/time ] || apt-get install -y -qq time
wheel=$(scripts/build-wheel.sh | tail -1)
rm -rf "$work/site"
"$py" -m pip install --quiet --no-deps --target "$work/site" "$wheel"
[ -s "$work/big.pt" ] || "$py" bench/load_inputs.py "$work"
export PYTHONPATH="$PWD/$work/site"
touch_all='s = sum(float(t.view(-1)[-1]) for t in sd.values())'
declare -A cmd=(
  [baseline]="import torch"
  [pickguard]="import torch, pickguard; sd = pickguard.load('$work/big.pt'); $touch_all"
  [torch]="import torch; sd = torch.load('$work/big.pt', weights_only=True); $touch_all"
  [torch_mmap]="import torch; sd = torch.load('$work/big.pt', weights_only=True, mmap=True); $touch_all"
  [safetensors]="import torch; from safetensors.torch import load_file; sd = load_file('$work/big.safetensors'); $touch_all"
)
order=(baseline pickguard torch torch_mmap safetensors)
args=()
for k in "${order[@]}"; do args+=(-n "$k" "$py -c \"${cmd[$k]}\""); done
hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/times.md" "${args[@]}"
{
  echo "| loader | peak RSS (MiB) |"
  echo "|---|---|"
  for k in "${order[@]}"; do
    kb=$(/usr/bin/time -f %M "$py" -c "${cmd[$k]}" 2>&1 >/dev/null | tail -1)
    echo "| $k | $((kb / 1024)) |"
  done
} > "$work/memory.md"
cat "$work/times.md" "$work/memory.md"

#!/usr/bin/env bash
# pickguard sign against model_signing sign key on a multi-GB model
# directory (page cache warm), and the single-core SHA-256 ceiling of this
# CPU (openssl speed, SHA-NI when present). Usage: bench/sign.sh [GB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
gb="${1:-4}"
runs="${2:-3}"
work=bench/work
model="$work/sign-model"
eval "$(scripts/setup-test-env.sh)"
ms="$(dirname "$PICKGUARD_PYTHON")/model_signing"
command -v hyperfine >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq hyperfine >/dev/null; }
mkdir -p "$model"
for i in $(seq 1 "$gb"); do
  f="$model/shard-$i.bin"
  [ -f "$f" ] || head -c $((1 << 30)) /dev/urandom > "$f"
done
[ -f "$work/key.pem" ] || { openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"; openssl ec -in "$work/key.pem" -pubout -out "$work/pub.pem" 2>/dev/null; }
cargo build --release --locked --quiet
pg="$PWD/target/release/pickguard"
cat "$model"/* > /dev/null   # warm the page cache
hyperfine --warmup 1 --runs "$runs" -N --export-markdown "$work/sign.md" \
  -n pickguard "$pg sign $model --private-key $work/key.pem --signature $work/pg.sig" \
  -n "pickguard -j1" "taskset -c 0 $pg sign $model --private-key $work/key.pem --signature $work/pg1.sig" \
  -n model_signing "$ms sign key $model --private_key $work/key.pem --signature $work/ms.sig" >&2
# One large file: whole-file digests use one core; shards use them all.
hyperfine --warmup 1 --runs "$runs" -N --export-markdown "$work/sign-single.md" \
  -n "hash 1 GiB file" "$pg hash $model/shard-1.bin" \
  -n "hash 1 GiB file, 256 MiB shards" "$pg hash --shard-size 268435456 $model/shard-1.bin" >&2
ceiling=$(openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | awk '/^sha256/ {print $NF}' | tr -d k)
{
  cat "$work/sign.md"
  echo
  cat "$work/sign-single.md"
  echo
  echo "single-core SHA-256 ceiling (openssl speed -evp sha256, 16 KiB blocks): ${ceiling} kB/s"
  echo "model: ${gb} GiB in ${gb} files; throughput = bytes / mean time"
} | tee "$work/sign-results.md"

#!/usr/bin/env bash
# Firewall replicas on PostgreSQL under load (issue 19): cached simple-page
# throughput and latency with wrk through HAProxy, for one replica and for
# three replicas on one PostgreSQL, next to the embedded SQLite firewall
# (direct, and through the same HAProxy). Everything runs on this machine,
# load generator included. Usage: bench/replicas.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conns="${2:-200}"
work="$PWD/bench/work/replicas"
rm -rf "$work"; mkdir -p "$work"
chmod 711 "$PWD/bench/work" "$work"
eval "$(scripts/setup-test-env.sh)"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; else sudo apt-get install -y -qq "${need[@]}" >/dev/null; fi
fi
ulimit -n 65536 || true
cargo build --release --locked --quiet
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -m immediate -D "$work/pg" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -A trust -U pickguard -E UTF8 --no-sync -D "$work/pg" >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -w -l "$work/pg/server.log" \
  -o "-p 18100 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/pg -c max_connections=200" \
  -D "$work/pg" start >/dev/null
db="postgres://pickguard@127.0.0.1:18100/postgres"

"$PICKGUARD_PYTHON" fixtures/gen/index_fixture.py "$work/indexes" >/dev/null
"$PICKGUARD_PYTHON" fixtures/gen/serve_index.py "$work/indexes/public" 0 "$work/upstream.log" > "$work/up.port" & pids+=($!)
sleep 1; up=$(head -1 "$work/up.port")

# fw CONFIG-NAME PORT [STORAGE-TOML]: start a firewall.
fw() {
  cat > "$work/$1.toml" <<TOML
listen = "127.0.0.1:$2"
data_dir = "$work/$1-data"
page_ttl_secs = 600
admin_token = "bench"
[[upstream]]
name = "pypi"
url = "http://127.0.0.1:$up/simple/"
$3
TOML
  target/release/pickguard firewall serve --config "$work/$1.toml" 2>"$work/$1.log" & pids+=($!)
  for i in $(seq 1 50); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return; sleep 0.2; done
  echo "firewall $1 did not start" >&2; cat "$work/$1.log" >&2; exit 1
}
storage="[storage]
database = \"$db\"
files_dir = \"$work/shared\""
fw sqlite 18101 ""
fw r1 18111 "$storage"
fw r2 18112 "$storage"
fw r3 18113 "$storage"

# haproxy NAME PORT BACKEND-PORTS...
lb() {
  local name=$1 port=$2; shift 2
  {
    echo "global"; echo "  maxconn 4000"
    echo "defaults"; echo "  mode http"; echo "  timeout connect 5s"; echo "  timeout client 60s"; echo "  timeout server 60s"
    echo "frontend f"; echo "  bind 127.0.0.1:$port"; echo "  default_backend b"
    echo "backend b"; echo "  balance roundrobin"; echo "  option httpchk GET /readyz"
    local i=0
    for p in "$@"; do i=$((i+1)); echo "  server s$i 127.0.0.1:$p check inter 2s"; done
  } > "$work/$name.cfg"
  haproxy -f "$work/$name.cfg" -db >"$work/$name.log" 2>&1 & pids+=($!)
}
lb lb-sqlite 18201 18101
lb lb-one 18202 18111
lb lb-three 18203 18111 18112 18113
sleep 3

accept='Accept: application/vnd.pypi.simple.v1+json'
out="$work/results.md"
echo "| setup | requests/s | p50 | p99 | errors |" > "$out"
echo "|---|---:|---:|---:|---:|" >> "$out"
for row in "sqlite, direct|18101" "sqlite, through haproxy|18201" "postgres, 1 replica, direct|18111" \
           "postgres, 1 replica, through haproxy|18202" "postgres, 3 replicas, through haproxy|18203"; do
  name=${row%|*}; port=${row#*|}
  u="http://127.0.0.1:$port/simple/publicdep/"
  for i in 1 2 3 4 5 6; do curl -sf -H "$accept" "$u" >/dev/null || true; done   # every replica's cache warm
  code=$(curl -s -o /dev/null -w "%{http_code}" -H "$accept" "$u" || true)
  [ "$code" = 200 ] || { echo "$name answered $code" >&2; continue; }
  f="$work/$(echo "$name" | tr -c 'a-z0-9' '_').wrk"
  wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$accept" "$u" > "$f" 2>&1 || true
  rps=$(awk '/Requests\/sec/ {print $2}' "$f")
  p50=$(awk '$1=="50%" {print $2}' "$f")
  p99=$(awk '$1=="99%" {print $2}' "$f")
  errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' "$f")
  echo "| $name | $rps | $p50 | $p99 | ${errs:-0} |" >> "$out"
done
# The claim test under load's aftermath: a claim through replica 1 is seen
# by replica 3 at once (the property the read-through costs buy).
curl -sf -X POST -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
  -d '{"names": ["publicdep"]}' http://127.0.0.1:18111/admin/claims >/dev/null
echo >> "$out"
echo "After a claim through replica 1, replica 3 answers $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18113/simple/publicdep/) (403 expected)." >> "$out"
cat "$out"

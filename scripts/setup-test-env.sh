#!/usr/bin/env bash
# Create, once, the cached Python venv and data the tests need, and print
# the environment variables that point at them (eval "$(scripts/setup-test-env.sh)").
#
# The venv lives outside the checkout (torch with its CUDA libraries is
# about 5 GB), keyed by the hash of scripts/test-requirements.txt so that a
# change of pins rebuilds it. Override with PICKGUARD_TEST_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pickguard"
venv="${PICKGUARD_TEST_VENV:-$cache/test-venv}"
req=scripts/test-requirements.txt
stamp="$venv/.pickguard-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating test venv in $venv (first run downloads torch, ~5 GB)" >&2
  command -v python3 >/dev/null || { echo "setup: python3 is required" >&2; exit 1; }
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  rm -f "$venv"/.pickguard-*
  touch "$stamp"
fi
# openssl makes the signing tests' keys.
if ! command -v openssl >/dev/null; then
  echo "setup: installing openssl (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq openssl >&2; else sudo apt-get install -y -qq openssl >&2; fi
fi
# The watch tests run each way a payload reaches a program: busybox (a copied
# multi-call shell), perl (-e), curl, libpython (an embedded interpreter) and a
# C compiler to build the embedding program.
wneed=()
command -v busybox >/dev/null || wneed+=(busybox)
command -v perl >/dev/null || wneed+=(perl-base)
command -v curl >/dev/null || wneed+=(curl)
command -v cc >/dev/null || wneed+=(gcc)
ls /usr/lib/*/libpython3*.so.1.0 >/dev/null 2>&1 || wneed+=(libpython3-dev)
# The firewall's web console is tested in headless Chromium through ChromeDriver.
command -v chromium >/dev/null || wneed+=(chromium)
command -v chromedriver >/dev/null || wneed+=(chromium-driver)
# Firewall replicas are tested against a real PostgreSQL server (started by
# the tests themselves on loopback, in a temporary directory).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || wneed+=(postgresql)
if [ ${#wneed[@]} -gt 0 ]; then
  echo "setup: installing ${wneed[*]} (Debian packages, for the watch, console and replica tests)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq "${wneed[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${wneed[@]}" >&2; }
  else sudo apt-get install -y -qq "${wneed[@]}" >&2; fi
fi
schema="$cache/sarif-2.1.0.json"
if [ ! -s "$schema" ]; then
  # The SARIF 2.1.0 JSON schema, as Microsoft's jest-sarif package ships it.
  command -v npm >/dev/null || { echo "setup: npm is required to fetch the SARIF schema" >&2; exit 1; }
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @microsoft/jest-sarif@1.0.0-beta.0 >/dev/null && tar xzf microsoft-jest-sarif-1.0.0-beta.0.tgz package/lib/schemas/sarif-2.1.0-rtm.5.json)
  mkdir -p "$cache"
  cp "$tmp/package/lib/schemas/sarif-2.1.0-rtm.5.json" "$schema"
  rm -rf "$tmp"
fi
echo "export PICKGUARD_PYTHON='$venv/bin/python'"
echo "export PICKGUARD_SARIF_SCHEMA='$schema'"

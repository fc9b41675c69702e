#!/usr/bin/env bash
# Debian packages pickguard needs to build: clang (compiles the eBPF program
# of `pickguard watch`), libelf and zlib headers (libbpf), pkg-config.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang llvm)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/libelf.h ] || [ -e /usr/include/gelf.h ] || need+=(libelf-dev)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (Debian packages)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq "${need[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >&2; }
  elif command -v sudo >/dev/null; then
    sudo apt-get install -y -qq "${need[@]}" >&2
  else
    echo "setup: please install: ${need[*]}" >&2
    exit 1
  fi
fi

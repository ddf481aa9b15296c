#!/usr/bin/env bash
# What C library an aarch64 heatvit binary needs on the board.
#
#   ci/glibc-check.sh BINARY [MAX]   fails if BINARY needs a glibc symbol version newer than
#                                    MAX (default 2.34: the oldest board root file system we
#                                    support, PetaLinux 2022.1 = Yocto 3.4 Honister, glibc 2.34)
#   ci/glibc-check.sh --static BINARY   fails unless BINARY is statically linked (the musl
#                                    build for older root file systems)
# See docs/on-the-board.md, "Check the board's C library".
set -euo pipefail
readelf=$(command -v aarch64-linux-gnu-readelf || command -v readelf)

if [ "${1:-}" = "--static" ]; then
  bin=$2
  if "$readelf" -lW "$bin" | grep -q 'INTERP' || "$readelf" -dW "$bin" | grep -q '(NEEDED)'; then
    echo "static check FAILED: $bin is dynamically linked:" >&2
    "$readelf" -dW "$bin" | grep '(NEEDED)' >&2 || true
    exit 1
  fi
  echo "static check: $bin is statically linked (no interpreter, no shared libraries)"
  exit 0
fi

bin=$1
max=${2:-2.34}
need=$("$readelf" -V --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$need" ]; then
  echo "glibc check FAILED: $bin has no GLIBC_ symbol versions (not a glibc binary?)" >&2
  exit 1
fi
highest=$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -n 1)
if [ "$highest" != "$max" ]; then
  echo "glibc check FAILED: $bin needs GLIBC_$need, the oldest supported root file system has $max." >&2
  echo "Symbols needing it:" >&2
  aarch64-linux-gnu-objdump -T "$bin" 2>/dev/null | grep "GLIBC_$need" >&2 || true
  exit 1
fi
echo "glibc check: $bin needs GLIBC_$need at most (limit $max: PetaLinux 2022.1 and newer)"

#!/usr/bin/env bash
# Fails if an aarch64 binary needs a newer glibc than the oldest board root file system we
# support. Baseline: PetaLinux 2022.1 (Yocto 3.4 "Honister", glibc 2.34). Older root file
# systems: use the static musl build (see docs/on-the-board.md).
# Usage: ci/glibc-check.sh BINARY [MAX_VERSION]
set -euo pipefail
bin=$1
max=${2:-2.34}
readelf=$(command -v aarch64-linux-gnu-readelf || command -v readelf)
need=$("$readelf" -V --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$need" ]; then
  echo "glibc check: $bin needs no versioned glibc symbols (static?)"
  exit 0
fi
highest=$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -n 1)
if [ "$highest" != "$max" ]; then
  echo "glibc check FAILED: $bin needs GLIBC_$need, the oldest supported rootfs has $max" >&2
  "$readelf" -V --wide "$bin" | grep "GLIBC_$need" >&2 || true
  exit 1
fi
echo "glibc check: $bin needs at most GLIBC_$need (limit $max)"

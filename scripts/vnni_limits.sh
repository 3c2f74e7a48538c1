#!/usr/bin/env bash
# Builds and runs scripts/vnni_limits.cpp: the cycles per instruction mix of
# the avx512vnni kernels on this CPU (see docs/benchmark.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/tsb_vnni_limits
mkdir -p "$out"
g++ -std=c++17 -O3 -march=x86-64 -Wall -Wextra -Wno-uninitialized -Wno-maybe-uninitialized -Wno-ignored-attributes "$here/vnni_limits.cpp" -o "$out/vnni_limits"
exec "$out/vnni_limits"

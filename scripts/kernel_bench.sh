#!/usr/bin/env bash
# Builds and runs scripts/kernel_bench.cpp (kernel-only timing, no torch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/tsb_kernel_bench
mkdir -p "$out"
flags=(-std=c++17 -O3 -ffp-contract=off -Wall -Wextra)
if [[ "$(uname -m)" == x86_64 ]]; then flags+=(-march=x86-64); fi
g++ "${flags[@]}" "$here/kernel_bench.cpp" "$here"/../csrc/kernels/*.cpp -o "$out/kernel_bench"
exec "$out/kernel_bench" "$@"

#!/usr/bin/env bash
# Builds the libFuzzer harness test/native/fuzz_bcsr.cpp with AddressSanitizer
# and UndefinedBehaviorSanitizer and runs it for a given number of seconds.
#   test/native/fuzz.sh [SECONDS] [libFuzzer options...]   fuzz (default 60 s)
#   test/native/fuzz.sh --coverage                         line coverage of the
#                                                          kernel core by the corpus
# The corpus is kept in $TSB_FUZZ_DIR (default ${TMPDIR:-/tmp}/tsb_fuzz) so that
# later runs continue from it; a crashing input is written there as crash-*.
# Needs clang, and llvm-profdata / llvm-cov for --coverage (Debian: apt-get install clang).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernels=$(cd "$here/../../csrc/kernels" && pwd)
out=${TSB_FUZZ_DIR:-${TMPDIR:-/tmp}/tsb_fuzz}
cxx=${CXX_FUZZ:-clang++}
mkdir -p "$out/corpus"

# build NAME FLAGS...: the harness and the kernel core, instrumented with FLAGS.
build() {
  local name=$1
  shift
  local flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -ffp-contract=off "$@")
  local objs=()
  mkdir -p "$out/$name.obj"
  for src in "$kernels"/*.cpp; do
    local base
    base=$(basename "$src" .cpp)
    "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$out/$name.obj/$base.o"
    objs+=("$out/$name.obj/$base.o")
  done
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/fuzz_bcsr.cpp" "${objs[@]}" -o "$out/$name"
}

if [[ "${1:-}" == "--coverage" ]]; then
  build fuzz_bcsr_cov -fprofile-instr-generate -fcoverage-mapping
  LLVM_PROFILE_FILE="$out/cov.profraw" "$out/fuzz_bcsr_cov" -runs=0 "$out/corpus" 2>&1 |
    grep -E "INITED|DONE" || true
  llvm-profdata merge -sparse "$out/cov.profraw" -o "$out/cov.profdata"
  llvm-cov report "$out/fuzz_bcsr_cov" -instr-profile="$out/cov.profdata" "$kernels"
  exit 0
fi

seconds=${1:-60}
shift || true
build fuzz_bcsr -fsanitize=address,undefined -fno-sanitize-recover=all
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
"$out/fuzz_bcsr" -max_total_time="$seconds" -print_final_stats=1 -max_len=8192 \
  -artifact_prefix="$out/" "$@" "$out/corpus"

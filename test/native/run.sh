#!/usr/bin/env bash
# Builds and runs the torch-free kernel test.
#   test/native/run.sh                     native build, every variant this CPU runs
#   test/native/run.sh --asan              the same under AddressSanitizer and
#                                          UndefinedBehaviorSanitizer
#   test/native/run.sh --arm               aarch64 cross build, run under qemu-aarch64
#                                          with a CPU without (cortex-a53) and with (max)
#                                          the dot-product extension
#   test/native/run.sh --x86-emulated      x86-64 with AVX2: the avx512vnni, avxvnni and
#                                          amx variants' code with their AVX-512, VNNI
#                                          and AMX instructions emulated
#                                          (x86_emulation.h, amx_emulation.h), under
#                                          the sanitizers
#   test/native/run.sh --x86-emulated --clang   the same built with clang++
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=("$here/kernel_test.cpp" "$here"/../../csrc/kernels/*.cpp)
out=${TMPDIR:-/tmp}/tsb_native_test
mkdir -p "$out"
flags=(-std=c++17 -O2 -ffp-contract=off -Wall -Wextra -Werror)
if [[ "${1:-}" == "--asan" ]]; then
  # AddressSanitizer + UndefinedBehaviorSanitizer, with std::vector's capacity
  # poisoned too, so that a read past an array's size fails even inside its
  # allocation.
  shift
  if [[ "$(uname -m)" == x86_64 ]]; then flags+=(-march=x86-64); fi
  g++ "${flags[@]/-O2/-O1}" -g -D_GLIBCXX_SANITIZE_VECTOR -fsanitize=address,undefined \
    -fno-sanitize-recover=all "${src[@]}" -o "$out/kernel_test_asan"
  "$out/kernel_test_asan" "${@}"
elif [[ "${1:-}" == "--x86-emulated" ]]; then
  shift
  cxx=(g++ -D_GLIBCXX_SANITIZE_VECTOR)
  if [[ "${1:-}" == "--clang" ]]; then
    shift
    cxx=(clang++)
  fi
  emulation=(-Wno-psabi -DTSB_X86_EMULATION="\"$here/x86_emulation.h\""
             -DTSB_AMX_EMULATION="\"$here/amx_emulation.h\"")
  "${cxx[@]}" "${flags[@]/-O2/-O1}" -march=x86-64 -g -fsanitize=address,undefined \
    -fno-sanitize-recover=all "${emulation[@]}" "${src[@]}" -o "$out/kernel_test_x86_emulated"
  "$out/kernel_test_x86_emulated" --require avx512vnni avxvnni amx "${@}"
elif [[ "${1:-}" == "--arm" ]]; then
  aarch64-linux-gnu-g++ "${flags[@]}" -static "${src[@]}" -o "$out/kernel_test_arm"
  echo "== qemu-aarch64 -cpu cortex-a53 (NEON, no dot-product)"
  qemu-aarch64 -cpu cortex-a53 "$out/kernel_test_arm" --require neon
  echo "== qemu-aarch64 -cpu max (NEON with dot-product)"
  qemu-aarch64 -cpu max "$out/kernel_test_arm" --require neon neondot
else
  # Baseline ISA on x86-64 (the AVX2 kernel enables its own target); aarch64's default is baseline.
  if [[ "$(uname -m)" == x86_64 ]]; then flags+=(-march=x86-64); fi
  g++ "${flags[@]}" "${src[@]}" -o "$out/kernel_test"
  "$out/kernel_test" "${@}"
fi

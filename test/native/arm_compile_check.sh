#!/usr/bin/env bash
# Checks that every C++ file of the extension compiles for aarch64:
#   csrc/kernels/*.cpp  (torch-free)  aarch64-linux-gnu-g++ -c, warnings as errors
#   csrc/*.cpp          (torch ops)   aarch64-linux-gnu-g++ -fsyntax-only against the
#                                     installed torch's headers (generic enough for a
#                                     syntax check although they come from an x86 wheel)
# Prints one line per file and exits non-zero when any file fails.
# Environment: CXX_AARCH64 (default aarch64-linux-gnu-g++), PYTHON (default python3).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
csrc=$(cd "$here/../../csrc" && pwd)
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
python=${PYTHON:-python3}
out=${TMPDIR:-/tmp}/tsb_arm_compile_check
mkdir -p "$out"
shopt -s nullglob
failures=0

check() {  # check <file> <command...>
  local file=$1 log="$out/$(basename "$1").log"
  shift
  if "$@" >"$log" 2>&1; then
    echo "ok    ${file#"$csrc"/}"
  else
    echo "FAIL  ${file#"$csrc"/}"
    sed 's/^/      /' "$log"
    failures=$((failures + 1))
  fi
}

kernel_flags=(-std=c++17 -O2 -ffp-contract=off -Wall -Wextra -Werror)
for f in "$csrc"/kernels/*.cpp; do
  check "$f" "$cxx" "${kernel_flags[@]}" -c "$f" -o "$out/$(basename "$f" .cpp).o"
done

op_files=("$csrc"/*.cpp)
if ((${#op_files[@]})); then
  # One line: the ABI flag, then the include directories (torch's, then Python's).
  if ! torch_info=$("$python" -c '
import sysconfig, torch, torch.utils.cpp_extension as c
print(int(torch.compiled_with_cxx11_abi()))
for p in c.include_paths() + [sysconfig.get_paths()["include"]]: print(p)'); then
    echo "FAIL  cannot read torch's include paths with $python"
    exit 1
  fi
  mapfile -t info <<<"$torch_info"
  op_flags=(-std=c++17 -fsyntax-only -D_GLIBCXX_USE_CXX11_ABI="${info[0]}"
            -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=torch_sparse_backend_C)
  for dir in "${info[@]:1}"; do op_flags+=(-isystem "$dir"); done
  for f in "${op_files[@]}"; do
    check "$f" "$cxx" "${op_flags[@]}" "$f"
  done
fi

echo "$failures file(s) failed"
((failures == 0))

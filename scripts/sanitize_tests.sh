#!/usr/bin/env bash
# Runs the pytest suite against the extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer (TORCH_SPARSE_BACKEND_SANITIZE=1, its own cache
# directory). Python and torch are not instrumented: the ASan runtime is
# preloaded, and leak detection is off because the interpreter keeps memory
# alive at exit by design. Any sanitizer report ends the run with an error.
#   scripts/sanitize_tests.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX:-c++}
libasan=$("$cxx" -print-file-name=libasan.so)
# The C++ runtime is preloaded too: the python binary does not link it, and
# ASan's interception of C++ exceptions needs it present from the start.
libstdcxx=$("$cxx" -print-file-name=libstdc++.so)
for lib in "$libasan" "$libstdcxx"; do
  if [[ ! -f "$lib" ]]; then
    echo "sanitize_tests.sh: $cxx has no $(basename "$lib") (Debian: apt-get install libasan8)" >&2
    exit 1
  fi
done
export TORCH_SPARSE_BACKEND_SANITIZE=1
export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# --capture=sys: sanitizer reports go to file descriptor 2, past pytest.
python -m pytest -q --capture=sys "$@"

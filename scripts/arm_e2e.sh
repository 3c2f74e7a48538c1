#!/usr/bin/env bash
# The full plugin on emulated aarch64: an arm64 Debian bookworm root run through
# qemu-user and binfmt_misc, torch's aarch64 wheel from PyPI, this checkout
# installed with pip, the C++ extension JIT-built by the root's own g++ on first
# import, then `python -m torch_sparse_backend info` and pytest, all under qemu.
#
#   scripts/arm_e2e.sh [pytest args...]     default: the tests in DEFAULT_TESTS
#
# Needs root (chroot, mounts, binfmt_misc), network access to Debian's mirror and
# PyPI, and debootstrap. Slow: run it under `nice -n 19` on shared machines.
#
# Environment:
#   TSB_ARM_ROOT    the arm64 root, built once and reused
#                   (default ~/.cache/torch_sparse_backend/arm64-root)
#   TSB_ARM_CPU     qemu CPU model (default max,pauth-impdef=on: NEON with the
#                   dot-product extension, and a cheap pointer-authentication hash in
#                   place of slow emulation of the architected one; cortex-a53 has
#                   no dot-product)
#   TSB_ARM_WHEELS  optional directory of wheels pip may take instead of downloading
#                   (e.g. a torch aarch64 wheel fetched earlier with `pip download`)
set -euo pipefail

started=$SECONDS
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${TSB_ARM_ROOT:-$HOME/.cache/torch_sparse_backend/arm64-root}
cache=$(dirname "$root")
qemu=$cache/qemu-aarch64-static
binfmt=/proc/sys/fs/binfmt_misc
binfmt_name=tsb-qemu-aarch64
mirror=http://deb.debian.org/debian
torch_version=2.13.0
venv=/opt/tsb-venv
export QEMU_CPU=${TSB_ARM_CPU:-max,pauth-impdef=on}

# Every layer in about ten minutes of emulation: each kernel variant against the
# reference (and the native kernel suite), bad input, modules and serialization,
# the upstream-style layer tests and the eager pipeline. Left out for time:
# test_kernels' full engine x mode x block sweep and the FX tests; pass `test`
# to run the whole suite.
DEFAULT_TESTS=(
  test/test_variants.py
  test/test_bad_input.py
  test/test_modules.py
  "test/test_kernels.py::TestQuantizedSparseKernels::test_sparse_qlinear_full_range_is_exact"
  "test/test_kernels.py::TestQuantizedSparseKernels::test_sparse_qlinear_serdes"
  "test/test_kernels.py::TestQuantizedSparseLayers"
  "test/test_fx.py::test_eager_pipeline_and_summary"
)
tests=("$@")
((${#tests[@]})) || tests=("${DEFAULT_TESTS[@]}")

step() { printf '\n== [%4ds] %s\n' $((SECONDS - started)) "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "arm_e2e.sh needs root (chroot, mount, binfmt_misc)" >&2; exit 1; }
mkdir -p "$cache"

# qemu-user-static: a static qemu-aarch64 keeps working inside the chroot, where
# the host's shared libraries are absent. Taken from Debian's package without
# installing it (it conflicts with qemu-user-binfmt).
if [ ! -x "$qemu" ]; then
  step "fetching qemu-aarch64-static from Debian"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q qemu-user-static 2>/dev/null)
  dpkg-deb -x "$tmp"/qemu-user-static_*.deb "$tmp/x"
  install -m 755 "$tmp/x/usr/bin/qemu-aarch64-static" "$qemu"
  rm -rf "$tmp"
fi

# binfmt_misc: the kernel hands every aarch64 ELF to qemu, so the compiler, ninja
# and every subprocess pytest starts run emulated without wrappers. Flag F opens
# the interpreter now, so it need not exist inside the chroot. The newest entry
# wins over older ones for the same magic.
grep -q " $binfmt binfmt_misc " /proc/mounts || mount -t binfmt_misc binfmt_misc "$binfmt"
if [ ! -e "$binfmt/$binfmt_name" ]; then
  step "registering $qemu for aarch64 ELF binaries ($binfmt/$binfmt_name)"
  magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":$binfmt_name:M::$magic:$mask:$qemu:F" >"$binfmt/register"
fi

# Mounts the root needs while it runs; undone on exit.
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" || true; done
}
trap cleanup EXIT
mount_in_root() {  # mount_in_root <target inside root> <mount args...>
  local target=$root$1
  shift
  mkdir -p "$target"
  mountpoint -q "$target" || { mount "$@" "$target" && mounted+=("$target"); }
}
in_root() {  # in_root <bash script>: runs it in the root with a clean environment
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" \
    SSL_CERT_FILE=/etc/tsb-host-ca.crt PIP_CERT=/etc/tsb-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH="$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    /bin/bash -euo pipefail -c "$1"
}

# Root file system: debootstrap's first stage unpacks arm64 packages on the host,
# the second stage configures them with the root's own (emulated) binaries.
if [ ! -e "$root/.tsb-debootstrap-done" ]; then
  step "debootstrap arm64 bookworm into $root"
  command -v debootstrap >/dev/null || { echo "install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  if grep -q " $root/" /proc/mounts; then
    echo "$root has file systems mounted inside it; unmount them first" >&2
    exit 1
  fi
  rm -rf "$root"
  debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$root" "$mirror"
  chroot "$root" /debootstrap/debootstrap --second-stage
  touch "$root/.tsb-debootstrap-done"
fi
# Name resolution and the certificate authorities of the host, so that pip in the
# root works wherever it works on the host (including behind TLS-intercepting proxies).
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$root/etc/tsb-host-ca.crt"
mount_in_root /proc -t proc proc
# qemu-user passes the host's /proc and /sys through. torch's cpuinfo needs
# /sys/devices/system/cpu/{possible,present} (without them it fails to initialize
# and reports no dot-product), but importing torch crashes (SIGSEGV) with the rest
# of the x86 host's /sys; so the root gets a /sys holding just those two files.
sysfs=$root-sys
mkdir -p "$sysfs/devices/system/cpu"
cp /sys/devices/system/cpu/possible /sys/devices/system/cpu/present "$sysfs/devices/system/cpu/"
mount_in_root /sys --bind "$sysfs"
mount_in_root /dev --bind /dev
mount_in_root /dev/shm -t tmpfs tmpfs

# Toolchain and Python from Debian, torch from PyPI in a virtual environment
# (bookworm's pip refuses to install into the system Python).
if [ ! -e "$root/.tsb-python-done" ]; then
  step "installing g++, python3 and torch==$torch_version (aarch64) in the root"
  find_links=()
  if [ -n "${TSB_ARM_WHEELS:-}" ]; then
    rm -rf "$root/wheels" && cp -r "$TSB_ARM_WHEELS" "$root/wheels"
    find_links=(--find-links /wheels)
  fi
  in_root "
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      g++ python3 python3-dev python3-venv ca-certificates
    apt-get clean
    python3 -m venv $venv
    # Byte-compiling all of torch takes most of the install time under emulation;
    # Python compiles the modules it imports on first use anyway.
    pip install -q --no-compile ${find_links[*]} torch==$torch_version
  "
  rm -rf "$root/wheels"
  touch "$root/.tsb-python-done"
fi

# This checkout, copied fresh (tracked and untracked files, not .git or caches),
# then the README's install: the package and the test requirements.
step "copying $repo to /src and installing it (pip install /src pytest expecttest numpy)"
rm -rf "$root/src"
mkdir -p "$root/src"
tar -C "$repo" --exclude=.git --exclude=__pycache__ --exclude=.pytest_cache \
  --exclude=build --exclude='*.egg-info' -cf - . | tar -C "$root/src" -xf -
in_root "cd /src && pip install -q --use-pep517 . pytest expecttest numpy"

# First import: the package builds its two libraries (ninja) with the root's
# g++ and ninja, emulated; the build cache lives in the root's ~/.cache and is
# reused while sources, flags, compiler and torch stay the same.
step "JIT build (python -m torch_sparse_backend build, under qemu -cpu $QEMU_CPU)"
build_started=$SECONDS
in_root "cd / && python -m torch_sparse_backend build"
echo "build step took $((SECONDS - build_started)) s"

step "python -m torch_sparse_backend info"
in_root "cd / && python -m torch_sparse_backend info"

step "pytest ${tests[*]}"
status=0
in_root "cd /src && python -m pytest -v -rA -p no:cacheprovider ${tests[*]@Q}" || status=$?

step "done: pytest exit status $status, total $((SECONDS - started)) s"
exit "$status"

// What the CPU and the operating system report, without torch: CPUID and the
// OS's AMX grant on x86-64, HWCAP on aarch64 Linux (see sparse_core.h and
// kernel_registry.h). No vector instruction is used here, so this file is
// compiled for the baseline ISA with every compiler.
#include "kernel_registry.h"
#include "sparse_core.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace tsb {

#if defined(__x86_64__) || defined(_M_X64)
namespace {

// CPUID leaf 7, subleaf 0, EDX.
unsigned cpuid7_edx() {
#if defined(__GNUC__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
  return edx;
#else
  return 0;
#endif
}

// XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS manages the tile state.
// xgetbv needs CPUID leaf 1 ECX bit 27 (OSXSAVE).
bool os_enables_tile_state() {
#if defined(__GNUC__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || (ecx & (1u << 27)) == 0) return false;
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  return (lo & (3u << 17)) == (3u << 17);
#else
  return false;
#endif
}

bool request_tile_data() {
  if (!cpuid_amx_tile()) return false;
#if defined(__linux__)
  // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), Linux 5.16 and later;
  // an older kernel answers EINVAL and its processes cannot use the tiles.
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  return os_enables_tile_state();
#else
  return false;
#endif
}

}  // namespace

bool cpuid_amx_tile() { return (cpuid7_edx() & (1u << 24)) != 0; }
bool cpuid_amx_int8() { return (cpuid7_edx() & (1u << 25)) != 0; }

bool amx_tile_data_granted() {
  static const bool granted = request_tile_data();  // initialized once, thread-safe
  return granted;
}
#endif  // x86-64

CpuFeatures cpu_features_reported() {
  CpuFeatures f;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  // The compiler's CPU model also checks that the OS enabled the AVX and
  // AVX-512 register state.
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
  f.avx512vnni = f.avx512bw && __builtin_cpu_supports("avx512vnni");
  // AVX-VNNI is CPUID leaf 7, subleaf 1, EAX bit 4 (not every compiler's
  // __builtin_cpu_supports knows it); the OS enables its state with AVX2's.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.avx_vnni = f.avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
  const bool tiles = amx_tile_data_granted();
  f.amx_tile = tiles && cpuid_amx_tile();
  f.amx_int8 = tiles && cpuid_amx_int8();
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is part of AArch64.
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  f.neon_dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#endif
  return f;
}

}  // namespace tsb

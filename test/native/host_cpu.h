// CPU features of the machine that runs a torch-free test or benchmark, to
// choose the kernel variants it runs. The product detects features in one
// place, csrc/cpu.cpp (ATen's cpuinfo, with these checks as its fallback);
// the programs built without torch ask the CPU directly.
#pragma once

#include "../../csrc/kernels/kernel_registry.h"
#include "../../csrc/kernels/sparse_core.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace tsb_test {

inline tsb::CpuFeatures host_cpu_features() {
  tsb::CpuFeatures f;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
  f.avx512vnni = f.avx512bw && __builtin_cpu_supports("avx512vnni");
  // AVX-VNNI: CPUID leaf 7, subleaf 1, EAX bit 4.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.avx_vnni = f.avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
  // AMX: CPUID, the OS's tile state and its grant to this process (the core's check).
  const bool tiles = tsb::amx_tile_data_granted();
  f.amx_tile = tiles && tsb::cpuid_amx_tile();
  f.amx_int8 = tiles && tsb::cpuid_amx_int8();
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is part of AArch64.
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  f.neon_dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#endif
  return f;
}

}  // namespace tsb_test

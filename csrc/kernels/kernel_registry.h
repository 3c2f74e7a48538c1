// Constructors of the kernel variants. Each ISA file defines its own and is
// compiled only for targets where it applies (see dispatch.cpp).
#pragma once

#include <memory>

#include "sparse_core.h"

namespace tsb {

std::unique_ptr<KernelPlan> make_reference_plan(const BcsrMatrix& m);

#if defined(__x86_64__) || defined(_M_X64)
std::unique_ptr<KernelPlan> make_avx2_plan(const BcsrMatrix& m);
std::unique_ptr<KernelPlan> make_avx512vnni_plan(const BcsrMatrix& m);
// AVX-VNNI needs GCC 11 or Clang 12 (target "avxvnni" and its intrinsics);
// older compilers build without the variant.
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define TSB_HAVE_AVXVNNI 1
std::unique_ptr<KernelPlan> make_avxvnni_plan(const BcsrMatrix& m);
#endif

// AMX (cpu_report.cpp, compiled with every compiler): what the CPU reports in
// CPUID leaf 7, EDX bit 24 (AMX-TILE) and bit 25 (AMX-INT8).
bool cpuid_amx_tile();
bool cpuid_amx_int8();
// Whether this process may use the AMX tile data: the CPU has AMX-TILE, the OS
// enables the tile state (XCR0 bits 17 and 18, read with xgetbv) and, on
// Linux, grants it to the process (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)). The request is made on the first call only; later
// calls return its answer. Thread-safe. False on other operating systems.
bool amx_tile_data_granted();

// The AMX variant (amx.cpp) needs GCC 11 or Clang 12 (targets "amx-tile" and
// "amx-int8" and their intrinsics); older compilers build without it.
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define TSB_HAVE_AMX 1
// When an amx plan multiplies with tiles (tdpbusd) instead of running its
// avx512vnni plan: calls of at least min_rows activation rows, and for block
// shapes with fewer than 16 rows only when the nonempty 16-channel x
// 64-column weight tiles are on average at least fine_min_fill full (the
// fraction of their 4-byte pieces that hold a nonzero weight).
struct AmxTuning {
  int64_t min_rows = 16;
  double fine_min_fill = 0.125;
};
// The tuning that make_amx_plan(m) (and so make_plan(m, "amx")) gives new
// plans; the op layer sets it from the environment (csrc/cpu.cpp).
void set_amx_tuning(const AmxTuning& t);
AmxTuning amx_tuning();
std::unique_ptr<KernelPlan> make_amx_plan(const BcsrMatrix& m);
std::unique_ptr<KernelPlan> make_amx_plan(const BcsrMatrix& m, const AmxTuning& t);
#endif
#endif

#if defined(__aarch64__)
std::unique_ptr<KernelPlan> make_neon_plan(const BcsrMatrix& m);
std::unique_ptr<KernelPlan> make_neondot_plan(const BcsrMatrix& m);
#endif

}  // namespace tsb

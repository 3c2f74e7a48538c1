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
#endif

#if defined(__aarch64__)
std::unique_ptr<KernelPlan> make_neon_plan(const BcsrMatrix& m);
std::unique_ptr<KernelPlan> make_neondot_plan(const BcsrMatrix& m);
#endif

}  // namespace tsb

// The x86 AVX-VNNI kernel variant ("avxvnni": AVX2 with the VEX-encoded
// vpdpbusd; Intel Alder Lake and later client cores, Sierra Forest):
// Avx2FamilyPlan of avx2_plan.h with every product formed by vpdpbusd on the
// raw activations, exact without sign transfer.
#include "kernel_registry.h"
#include "sparse_core.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(TSB_HAVE_AVXVNNI)

#include "x86_layouts.h"
#include "x86_target.h"

#if defined(TSB_X86_EMULATION)
// Test builds only (test/native/run.sh --x86-emulated): AVX2 code, with
// vpdpbusd emulated by the header this macro names.
TSB_TARGET_BEGIN("avx2")
#include "x86_common.h"
#include TSB_X86_EMULATION
#else
TSB_TARGET_BEGIN("avx2,avxvnni")
#endif
#include "avx2_plan.h"

namespace tsb {
namespace {

// vpdpbusd: exact for any unsigned and signed bytes. Written as asm with the
// accumulator tied to the output, as in avx512vnni.cpp: GCC 12 copies
// loop-carried accumulators through another register around each vpdpbusd
// intrinsic, and spills some. The intrinsic with Clang and in emulated test
// builds.
struct VnniDot {
  static constexpr const char* kName = "avxvnni";
  static constexpr bool kExact = true;
  static __m256i dot(__m256i acc, __m256i u, __m256i s) {
#if defined(TSB_X86_EMULATION) || defined(__clang__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
#endif
  }
};

using AvxVnniPlan = Avx2FamilyPlan<VnniDot>;

}  // namespace

std::unique_ptr<KernelPlan> make_avxvnni_plan(const BcsrMatrix& m) {
  return std::make_unique<AvxVnniPlan>(m);
}

}  // namespace tsb

TSB_TARGET_END

#endif  // x86-64 and a compiler with AVX-VNNI

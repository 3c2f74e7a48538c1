// The x86 AVX2 kernel variant ("avx2"): Avx2FamilyPlan of avx2_plan.h with
// products by vpmaddubsw, made exact by sign transfer (see there).
#include "kernel_registry.h"
#include "sparse_core.h"

#if defined(__x86_64__) || defined(_M_X64)

#include "x86_layouts.h"
#include "x86_target.h"

TSB_TARGET_BEGIN("avx2")
#include "avx2_plan.h"

namespace tsb {
namespace {

// vpmaddubsw, then vpmaddwd with ones to add the pair sums into 32-bit lanes.
// Exact only where no pair sum leaves int16: activations below 128, or
// operands after sign transfer.
struct SignTransferDot {
  static constexpr const char* kName = "avx2";
  static constexpr bool kExact = false;
  static __m256i dot(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
};

using Avx2Plan = Avx2FamilyPlan<SignTransferDot>;

}  // namespace

std::unique_ptr<KernelPlan> make_avx2_plan(const BcsrMatrix& m) {
  return std::make_unique<Avx2Plan>(m);
}

}  // namespace tsb

TSB_TARGET_END

#endif  // x86-64

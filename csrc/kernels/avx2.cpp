// The x86 AVX2 kernel variant ("avx2"): the kernels of avx2_plan.h with
// vpmaddubsw products (sign transfer; see there).
#include "kernel_registry.h"
#include "sparse_core.h"

#if defined(__x86_64__) || defined(_M_X64)

#include "x86_layouts.h"
#include "x86_target.h"

TSB_TARGET_BEGIN("avx2")
#define TSB_AVX2_VNNI 0
#include "avx2_plan.h"

namespace tsb {

std::unique_ptr<KernelPlan> make_avx2_plan(const BcsrMatrix& m) {
  return std::make_unique<Avx2Plan>(m);
}

}  // namespace tsb

TSB_TARGET_END

#endif  // x86-64

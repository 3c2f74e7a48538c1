// The x86 AVX-VNNI kernel variant ("avxvnni": AVX2 with the VEX-encoded
// vpdpbusd; Intel Alder Lake and later client cores, Sierra Forest): the
// kernels of avx2_plan.h with every product formed by vpdpbusd on the raw
// activations, exact without sign transfer.
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
#define TSB_AVX2_VNNI 1
#include "avx2_plan.h"

namespace tsb {

std::unique_ptr<KernelPlan> make_avxvnni_plan(const BcsrMatrix& m) {
  return std::make_unique<Avx2Plan>(m);
}

}  // namespace tsb

TSB_TARGET_END

#endif  // x86-64 and a compiler with AVX-VNNI

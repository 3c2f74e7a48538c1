// What the op layer knows of the CPU it runs on, in one place: the features
// that select a kernel variant (detected once), the TORCH_SPARSE_BACKEND_KERNEL
// override, the variants this CPU runs, and the plan a packed weight uses. The
// kernel core (csrc/kernels/dispatch.cpp) holds the table of variants and only
// chooses from the CpuFeatures it is given.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/sparse_core.h"

namespace tsb {

// Features of the running CPU, detected on the first call. ATen's cpuinfo
// answers; for a feature it has no answer for (a key missing from its map),
// the CPU's own report does: CPUID on x86-64, HWCAP on aarch64 Linux.
const CpuFeatures& cpu_features();

// Names of the features cpu_features() holds, in CpuFeatures' order: "avx2",
// "avx512bw", "avx512vnni", "avx_vnni", "amx_tile", "amx_int8", "neon",
// "neon_dot". The AMX ones mean that this process may also use the tiles.
std::vector<std::string> cpu_feature_names();

// The compiled kernel variants this CPU runs, best first, ending with "reference".
std::vector<std::string> runnable_variants();

// The kernel variant new plans use: the one TORCH_SPARSE_BACKEND_KERNEL names
// when the variable is set and not empty, else the best one for this CPU.
// Throws c10::ValueError when the variable names a variant that is not
// compiled in or cannot run here.
const std::string& active_variant();

// The plan of kernel variant `variant` for `m` (validated), or of
// active_variant() when `variant` is "". Throws c10::ValueError when `variant`
// is not compiled in or cannot run on this CPU, or when the amx variant's
// tuning variables (TORCH_SPARSE_BACKEND_AMX_MIN_ROWS, _MIN_FILL; see cpu.cpp)
// hold bad values.
std::unique_ptr<KernelPlan> make_plan_for_cpu(const BcsrMatrix& m, const std::string& variant);

}  // namespace tsb

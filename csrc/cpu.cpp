// CPU features, the kernel variant override and the plans of this CPU (see cpu.h).
#include "cpu.h"

#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <unordered_map>

#include "kernels/kernel_registry.h"

namespace tsb {
namespace {

CpuFeatures detect() {
  const std::unordered_map<std::string, c10::IValue> caps = at::cpu::get_cpu_capabilities();
  // ATen's answer for `key`, or `fallback` when its map has no bool under `key`.
  auto aten = [&caps](const char* key, bool fallback) {
    const auto it = caps.find(key);
    return it != caps.end() && it->second.isBool() ? it->second.toBool() : fallback;
  };
  const CpuFeatures own = cpu_features_reported();
  CpuFeatures f;
  f.avx2 = aten("avx2", own.avx2) && aten("fma3", own.avx2);
  f.avx512bw = aten("avx512_f", own.avx512bw) && aten("avx512_bw", own.avx512bw) &&
               aten("avx512_vl", own.avx512bw);
  f.avx512vnni = f.avx512bw && aten("avx512_vnni", own.avx512vnni);
  f.avx_vnni = aten("avx_vnni", own.avx_vnni);
#if defined(__x86_64__) || defined(_M_X64)
  // The tiles are usable only when the OS enables their state and grants the
  // tile data to this process (requested here, once): neither cpuinfo nor
  // CPUID alone tells.
  const bool tile_data = amx_tile_data_granted();
  f.amx_tile = tile_data && aten("amx_tile", own.amx_tile);
  f.amx_int8 = tile_data && aten("amx_int8", own.amx_int8);
#endif
  f.neon = aten("neon", own.neon);
  f.neon_dot = f.neon && aten("dot", own.neon_dot);
#if defined(__aarch64__)
  // Advanced SIMD is part of AArch64, and HWCAP has the final word on the
  // dot-product extension where cpuinfo could not read the CPU's ID registers.
  f.neon = true;
  f.neon_dot = f.neon_dot || own.neon_dot;
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<std::string> cpu_feature_names() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> names;
  if (f.avx2) names.emplace_back("avx2");
  if (f.avx512bw) names.emplace_back("avx512bw");
  if (f.avx512vnni) names.emplace_back("avx512vnni");
  if (f.avx_vnni) names.emplace_back("avx_vnni");
  if (f.amx_tile) names.emplace_back("amx_tile");
  if (f.amx_int8) names.emplace_back("amx_int8");
  if (f.neon) names.emplace_back("neon");
  if (f.neon_dot) names.emplace_back("neon_dot");
  return names;
}

std::vector<std::string> runnable_variants() {
  std::vector<std::string> names;
  for (const auto& name : compiled_variants()) {
    if (can_run(name, cpu_features())) names.push_back(name);
  }
  return names;
}

namespace {

// TORCH_SPARSE_BACKEND_AMX_MIN_ROWS (an integer >= 1) and
// TORCH_SPARSE_BACKEND_AMX_MIN_FILL (a number in [0, 1]) override the amx
// variant's choice between its tiles and its avx512vnni plan (AmxTuning in
// kernels/kernel_registry.h), for benchmarking the crossover. Read once,
// before the first plan is made; a bad value throws here, and again on the
// next call.
void apply_amx_tuning() {
#if defined(TSB_HAVE_AMX)
  static const bool applied = [] {
    AmxTuning t = amx_tuning();
    if (const char* env = std::getenv("TORCH_SPARSE_BACKEND_AMX_MIN_ROWS"); env && *env) {
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(env, &end, 10);
      TORCH_CHECK_VALUE(errno == 0 && *end == '\0' && v >= 1,
                        "TORCH_SPARSE_BACKEND_AMX_MIN_ROWS: expected an integer >= 1, got '", env, "'");
      t.min_rows = v;
    }
    if (const char* env = std::getenv("TORCH_SPARSE_BACKEND_AMX_MIN_FILL"); env && *env) {
      char* end = nullptr;
      errno = 0;
      const double v = std::strtod(env, &end);
      TORCH_CHECK_VALUE(errno == 0 && *end == '\0' && v >= 0.0 && v <= 1.0,
                        "TORCH_SPARSE_BACKEND_AMX_MIN_FILL: expected a number in [0, 1], got '", env, "'");
      t.fine_min_fill = v;
    }
    set_amx_tuning(t);
    return true;
  }();
  (void)applied;
#endif
}

}  // namespace

const std::string& active_variant() {
  // Read once: every plan of the process uses the same variant. A bad value
  // throws here, and again on the next call.
  static const std::string variant = [] {
    const char* env = std::getenv("TORCH_SPARSE_BACKEND_KERNEL");
    std::string error;
    std::string chosen = select_variant(cpu_features(), env ? env : "", &error);
    TORCH_CHECK_VALUE(error.empty(), "TORCH_SPARSE_BACKEND_KERNEL: ", error);
    return chosen;
  }();
  return variant;
}

std::unique_ptr<KernelPlan> make_plan_for_cpu(const BcsrMatrix& m, const std::string& variant) {
  apply_amx_tuning();
  if (variant.empty()) return make_plan(m, active_variant());
  std::string error;
  const std::string chosen = select_variant(cpu_features(), variant, &error);
  TORCH_CHECK_VALUE(error.empty(), error);
  return make_plan(m, chosen);
}

}  // namespace tsb

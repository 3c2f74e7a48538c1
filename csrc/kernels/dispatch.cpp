// The one place that decides which kernel variant runs.
#include <stdexcept>

#include "kernel_registry.h"
#include "sparse_core.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace tsb {
namespace {

struct Variant {
  const char* name;
  bool (*runs_on)(const CpuFeatures&);
  std::unique_ptr<KernelPlan> (*make)(const BcsrMatrix&);
};

// Best first; the reference kernel runs everywhere and comes last.
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
#if defined(__aarch64__)
      {"neondot", [](const CpuFeatures& f) { return f.neon_dot; }, make_neondot_plan},
      {"neon", [](const CpuFeatures& f) { return f.neon; }, make_neon_plan},
#endif
#if defined(__x86_64__) || defined(_M_X64)
      {"avx512vnni", [](const CpuFeatures& f) { return f.avx512vnni; }, make_avx512vnni_plan},
#if defined(TSB_HAVE_AVXVNNI)
      {"avxvnni", [](const CpuFeatures& f) { return f.avx2 && f.avx_vnni; }, make_avxvnni_plan},
#endif
      {"avx2", [](const CpuFeatures& f) { return f.avx2; }, make_avx2_plan},
#endif
      {"reference", [](const CpuFeatures&) { return true; }, make_reference_plan},
  };
  return v;
}

const Variant* find(const std::string& name) {
  for (const auto& v : variants()) {
    if (name == v.name) return &v;
  }
  return nullptr;
}

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
  f.avx512vnni = f.avx512bw && __builtin_cpu_supports("avx512vnni");
  // AVX-VNNI: CPUID leaf 7, subleaf 1, EAX bit 4 (not every compiler's
  // __builtin_cpu_supports knows it); the AVX state is enabled where AVX2 is.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.avx_vnni = f.avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is mandatory on AArch64.
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  f.neon_dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#endif
  return f;
}

const std::vector<std::string>& compiled_variants() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& v : variants()) n.emplace_back(v.name);
    return n;
  }();
  return names;
}

bool can_run(const std::string& variant, const CpuFeatures& f) {
  const Variant* v = find(variant);
  return v != nullptr && v->runs_on(f);
}

std::string select_variant(const CpuFeatures& f, const std::string& forced,
                           std::string* error) {
  if (!forced.empty()) {
    const Variant* v = find(forced);
    if (v == nullptr) {
      std::string known;
      for (const auto& n : compiled_variants()) known += (known.empty() ? "" : ", ") + n;
      *error = "unknown kernel variant '" + forced + "' (this build has: " + known + ")";
      return "";
    }
    if (!v->runs_on(f)) {
      *error = "kernel variant '" + forced + "' cannot run on this CPU";
      return "";
    }
    return forced;
  }
  for (const auto& v : variants()) {
    if (v.runs_on(f)) return v.name;
  }
  return "reference";
}

std::unique_ptr<KernelPlan> make_plan(const BcsrMatrix& m, const std::string& variant) {
  const Variant* v = find(variant);
  if (v == nullptr) throw std::invalid_argument("unknown kernel variant '" + variant + "'");
  return v->make(m);
}

}  // namespace tsb

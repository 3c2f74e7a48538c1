// The table of kernel variants compiled into this build, and the choice of one
// for a given set of CPU features. The features come from the caller: the op
// layer detects them (csrc/cpu.cpp), the standalone tests and benchmarks have
// their own detection or synthetic sets.
#include <stdexcept>

#include "kernel_registry.h"
#include "sparse_core.h"

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
#if defined(TSB_HAVE_AMX)
      {"amx", [](const CpuFeatures& f) { return f.avx512vnni && f.amx_tile && f.amx_int8; }, make_amx_plan},
#endif
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
      if (error != nullptr) {
        *error = "unknown kernel variant '" + forced + "' (this build has: " + known + ")";
      }
      return "";
    }
    if (!v->runs_on(f)) {
      if (error != nullptr) {
        *error = "kernel variant '" + forced + "' cannot run on this CPU";
        if (forced == "amx") {
          *error += " (it needs AVX-512 VNNI, AMX-TILE and AMX-INT8, and an OS that grants the "
                    "tile data to the process: Linux 5.16 or later)";
        }
      }
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

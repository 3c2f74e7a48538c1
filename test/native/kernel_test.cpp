// Standalone test of the kernel core (no torch): every kernel variant this CPU
// can run must be bit-identical to the reference kernel, for every block shape,
// both modes, random and extreme inputs, odd sizes, any split of the work.
//
// Build and run (x86):     test/native/run.sh
// Cross (aarch64, qemu):   test/native/run.sh --arm
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/kernels/kernel_registry.h"
#include "../../csrc/kernels/sparse_core.h"

namespace {

// The amx variant as dispatch makes it ("amx": tiles for calls of 16 rows or
// more, fine blocks only when their tiles are full enough), and with tiles for
// every call and every density ("amx/tiles"), so that the tile path also runs
// on batches of 1 to 15 rows and on sparse fine blocks.
const char* const kAmxTiles = "amx/tiles";

std::unique_ptr<tsb::KernelPlan> make_test_plan(const tsb::BcsrMatrix& bm, const std::string& name) {
#if defined(TSB_HAVE_AMX)
  if (name == kAmxTiles) {
    tsb::AmxTuning always;
    always.min_rows = 1;
    always.fine_min_fill = 0.0;
    return tsb::make_amx_plan(bm, always);
  }
#endif
  return tsb::make_plan(bm, name);
}

int g_failures = 0;
int g_checks = 0;

struct Case {
  int64_t M, N, K, rb, cb;
  double density;
  // 0 random, 1 extreme (255 activations, +-127/-128 weights), 2 random extremes,
  // 3 random activations below 128 (as from reduce_range observers), 4 extremes
  // below 128 (127 activations, 127/-128 weights)
  int mode;
  bool relu;
  bool per_channel;
  // Row strides exactly padded_k() (x) and N (y), and buffers of exactly M rows,
  // so that a read or write past a row's end leaves the buffers (sanitizers).
  bool tight = false;
};

std::vector<int8_t> make_weight(std::mt19937& g, const Case& c) {
  std::vector<int8_t> w(c.N * c.K, 0);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> val(-128, 127);
  const int64_t nbr = (c.N + c.rb - 1) / c.rb, nbc = (c.K + c.cb - 1) / c.cb;
  for (int64_t br = 0; br < nbr; ++br) {
    for (int64_t bc = 0; bc < nbc; ++bc) {
      if (u(g) >= c.density) continue;
      for (int64_t r = 0; r < c.rb; ++r) {
        for (int64_t cc = 0; cc < c.cb; ++cc) {
          const int64_t n = br * c.rb + r, k = bc * c.cb + cc;
          if (n >= c.N || k >= c.K) continue;
          int v = val(g);
          if (c.mode == 1) v = (n + k) % 3 == 0 ? -128 : ((n + k) % 3 == 1 ? 127 : -127);
          if (c.mode == 2 || c.mode == 4) v = (val(g) & 1) ? 127 : -128;
          w[n * c.K + k] = static_cast<int8_t>(v);
        }
      }
    }
  }
  return w;
}

template <typename T>
int64_t count_diff(const std::vector<T>& a, const std::vector<T>& b) {
  int64_t d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return d;
}

void run_case(std::mt19937& g, const Case& c, const std::vector<std::string>& variants) {
  const std::vector<int8_t> w = make_weight(g, c);
  const tsb::BcsrMatrix bm = tsb::pack_bcsr(w.data(), c.N, c.K, c.rb, c.cb);
  if (!tsb::validate_bcsr(bm).empty()) {
    std::printf("FAIL pack produced an invalid matrix: %s\n", tsb::validate_bcsr(bm).c_str());
    ++g_failures;
    return;
  }
  std::vector<int8_t> back(c.N * c.K);
  tsb::unpack_bcsr(bm, back.data());
  ++g_checks;
  if (back != w) {
    std::printf("FAIL unpack(pack(w)) != w for N=%lld K=%lld %lldx%lld\n", (long long)c.N,
                (long long)c.K, (long long)c.rb, (long long)c.cb);
    ++g_failures;
  }

  const int64_t Kp = bm.padded_k(), Np = bm.padded_n();
  const int64_t ldx = c.tight ? Kp : Kp + 3;  // by default a stride larger than the row
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> x(std::max<int64_t>(c.M, 1) * ldx);
  for (auto& v : x) {
    const int b = byte(g);
    v = static_cast<uint8_t>(c.mode == 1 ? 255 : c.mode == 2 ? (b & 1) * 255 : c.mode == 3 ? b / 2 : c.mode == 4 ? 127 : b);
  }
  const int32_t x_zp = c.mode == 1 ? 0 : byte(g);

  std::uniform_real_distribution<float> scale(0.5f, 2.0f), bias(-3000.f, 3000.f);
  std::vector<float> rq(Np), bs(Np), dq(Np), b(Np);
  const float common = scale(g) * 1e-3f;
  for (int64_t n = 0; n < Np; ++n) {
    rq[n] = c.per_channel ? scale(g) * 1e-3f : common;
    bs[n] = bias(g);
    dq[n] = rq[n] * 0.37f;
    b[n] = bs[n] * 1e-3f;
  }
  tsb::StaticArgs sa;
  sa.x = x.data();
  sa.ldx = ldx;
  sa.x_zero_point = x_zp;
  sa.ldy = c.tight ? c.N : c.N + 1;
  sa.requant_scale = rq.data();
  sa.bias_scaled = bs.data();
  sa.y_zero_point = byte(g);
  sa.qmin = c.relu ? sa.y_zero_point : 0;
  sa.qmax = 255;
  tsb::DynamicArgs da;
  da.x = x.data();
  da.ldx = ldx;
  da.x_zero_point = x_zp;
  da.ldy = c.tight ? c.N : c.N + 2;
  da.dequant_scale = dq.data();
  da.bias = b.data();
  da.relu = c.relu;

  const size_t ys = std::max<int64_t>(c.M, 1) * sa.ldy, yd = std::max<int64_t>(c.M, 1) * da.ldy;
  std::vector<uint8_t> ref_s(ys, 7);
  std::vector<float> ref_d(yd, 7.f);
  auto ref = tsb::make_plan(bm, "reference");
  sa.y = ref_s.data();
  da.y = ref_d.data();
  ref->run_static(sa, 0, c.M, 0, ref->num_tiles());
  ref->run_dynamic(da, 0, c.M, 0, ref->num_tiles());

  for (const auto& name : variants) {
    auto plan = make_test_plan(bm, name);
    const int64_t T = plan->num_tiles();
    // The work measure the op layer splits threads by: from 0, nondecreasing.
    bool monotone = plan->work_before(0) >= 0;
    for (int64_t t = 0; t < T; ++t) monotone &= plan->work_before(t) <= plan->work_before(t + 1);
    ++g_checks;
    if (!monotone) {
      ++g_failures;
      std::printf("FAIL %s work_before is not nondecreasing on N=%lld K=%lld block=%lldx%lld\n",
                  name.c_str(), (long long)c.N, (long long)c.K, (long long)c.rb, (long long)c.cb);
    }
    // Whole range, then the same work split into uneven pieces (as threads do).
    for (int split = 0; split < 2; ++split) {
      std::vector<uint8_t> out_s(ys, 7);
      std::vector<float> out_d(yd, 7.f);
      sa.y = out_s.data();
      da.y = out_d.data();
      if (split == 0) {
        plan->run_static(sa, 0, c.M, 0, T);
        plan->run_dynamic(da, 0, c.M, 0, T);
      } else {
        const int64_t mh = c.M / 2, th = T / 3;
        for (auto [m0, m1] : {std::pair<int64_t, int64_t>{0, mh}, {mh, c.M}}) {
          for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, th}, {th, T}}) {
            plan->run_static(sa, m0, m1, t0, t1);
            plan->run_dynamic(da, m0, m1, t0, t1);
          }
        }
      }
      g_checks += 2;
      const int64_t ds = count_diff(out_s, ref_s), dd = count_diff(out_d, ref_d);
      if (ds || dd) {
        ++g_failures;
        std::printf(
            "FAIL %s split=%d M=%lld N=%lld K=%lld block=%lldx%lld density=%.2f mode=%d relu=%d"
            " per_channel=%d tight=%d: %lld static and %lld dynamic outputs differ\n",
            name.c_str(), split, (long long)c.M, (long long)c.N, (long long)c.K,
            (long long)c.rb, (long long)c.cb, c.density, c.mode, c.relu, c.per_channel,
            c.tight, (long long)ds, (long long)dd);
      }
    }
  }
}

// Every variant's quantize_activations against the reference: random values,
// exact and near .5 ties, and magnitudes that clamp (or overflow to infinity).
void check_quantize_activations(std::mt19937& g, const std::vector<std::string>& variants) {
  const std::vector<int8_t> w(16, 1);
  const tsb::BcsrMatrix bm = tsb::pack_bcsr(w.data(), 4, 4, 1, 4);
  std::uniform_real_distribution<float> uni(-300.f, 300.f), big(-3e38f, 3e38f);
  std::uniform_int_distribution<int> zp_dist(0, 255), half(-300, 300);
  for (const auto& name : variants) {
    auto plan = make_test_plan(bm, name);
    for (int round = 0; round < 60; ++round) {
      const int64_t n = round % 37 + (round % 3) * 64;
      const float inv_scale = round % 4 == 0 ? 1.f : (round % 4 == 1 ? 0.37f : 9.5f);
      const int32_t zp = round % 5 == 0 ? 0 : (round % 5 == 1 ? 255 : zp_dist(g));
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) {
        switch ((i + round) % 5) {
          case 0: x[i] = uni(g); break;
          case 1: x[i] = (static_cast<float>(half(g)) + 0.5f) / inv_scale; break;
          case 2: x[i] = std::nextafter((static_cast<float>(half(g)) + 0.5f) / inv_scale,
                                        (i & 1) ? 1e30f : -1e30f); break;
          case 3: x[i] = big(g); break;
          default: x[i] = (i & 1) ? -0.f : uni(g) * 1e-3f; break;
        }
      }
      std::vector<uint8_t> ref(n + 1, 7), out(n + 1, 7);
      tsb::quantize_activations_reference(x.data(), n, inv_scale, zp, ref.data());
      plan->quantize_activations(x.data(), n, inv_scale, zp, out.data());
      ++g_checks;
      const int64_t d = count_diff(out, ref);
      if (d) {
        ++g_failures;
        std::printf("FAIL %s quantize_activations n=%lld inv_scale=%g zp=%d: %lld values differ\n",
                    name.c_str(), (long long)n, inv_scale, zp, (long long)d);
      }
    }
  }
}

// Every variant's finite_min_max against the reference: same range (compared
// as values, so -0 equals +0), and NaN or infinity anywhere is reported.
void check_finite_min_max(std::mt19937& g, const std::vector<std::string>& variants) {
  const std::vector<int8_t> w(16, 1);
  const tsb::BcsrMatrix bm = tsb::pack_bcsr(w.data(), 4, 4, 1, 4);
  std::uniform_real_distribution<float> uni(-300.f, 300.f);
  const float specials[] = {NAN, INFINITY, -INFINITY, -0.f, 0.f, 3e38f, -3e38f};
  for (const auto& name : variants) {
    auto plan = make_test_plan(bm, name);
    for (int round = 0; round < 80; ++round) {
      const int64_t n = 1 + round % 41 + (round % 3) * 64;
      std::vector<float> x(n);
      for (auto& v : x) v = round % 4 == 0 ? -uni(g) * 1e-30f : uni(g);
      if (round % 5 != 0) x[(round * 7) % n] = specials[round % 7];
      float rlo = 0, rhi = 0, lo = 0, hi = 0;
      const bool rf = tsb::finite_min_max_reference(x.data(), n, &rlo, &rhi);
      const bool f = plan->finite_min_max(x.data(), n, &lo, &hi);
      ++g_checks;
      if (rf != f || (rf && (lo != rlo || hi != rhi))) {
        ++g_failures;
        std::printf("FAIL %s finite_min_max n=%lld: finite %d/%d, range [%g, %g] vs [%g, %g]\n",
                    name.c_str(), (long long)n, f, rf, lo, hi, rlo, rhi);
      }
    }
  }
}

// Which variant dispatch picks for a set of CPU features (best first), and
// that forcing one the features do not allow is an error: checked on every
// machine with synthetic feature sets.
void check_dispatch() {
  struct Expect {
    tsb::CpuFeatures f;
    const char* best;
  };
  auto features = [](bool avx2, bool avx512bw, bool avx512vnni, bool avx_vnni, bool neon, bool neon_dot,
                     bool amx = false) {
    tsb::CpuFeatures f;
    f.amx_tile = amx;
    f.amx_int8 = amx;
    f.avx2 = avx2;
    f.avx512bw = avx512bw;
    f.avx512vnni = avx512vnni;
    f.avx_vnni = avx_vnni;
    f.neon = neon;
    f.neon_dot = neon_dot;
    return f;
  };
  std::vector<Expect> cases = {{features(false, false, false, false, false, false), "reference"}};
#if defined(__x86_64__) || defined(_M_X64)
  cases.push_back({features(true, false, false, false, false, false), "avx2"});
  // Alder Lake, Sierra Forest (avx2 where the compiler had no AVX-VNNI).
  bool have_avxvnni = false;
  for (const auto& v : tsb::compiled_variants()) have_avxvnni |= v == "avxvnni";
  cases.push_back({features(true, false, false, true, false, false), have_avxvnni ? "avxvnni" : "avx2"});
  cases.push_back({features(true, true, false, false, false, false), "avx2"});       // Skylake-SP
  cases.push_back({features(true, true, true, false, false, false), "avx512vnni"});  // Cascade Lake, Ice Lake
  cases.push_back({features(true, true, true, true, false, false), "avx512vnni"});   // Sapphire Rapids, Zen 5
  cases.push_back({features(false, false, false, true, false, false), "reference"});  // no AVX2: no avxvnni
  bool have_amx = false;
  for (const auto& v : tsb::compiled_variants()) have_amx |= v == "amx";
  // Sapphire Rapids, Emerald Rapids, Granite Rapids (avx512vnni where the compiler had no AMX).
  cases.push_back({features(true, true, true, true, false, false, true), have_amx ? "amx" : "avx512vnni"});
  cases.push_back({features(true, true, false, false, false, false, true), "avx2"});  // AMX without VNNI: no amx
  {
    tsb::CpuFeatures tile_only = features(true, true, true, true, false, false);
    tile_only.amx_tile = true;  // AMX-TILE without AMX-INT8
    cases.push_back({tile_only, "avx512vnni"});
    tsb::CpuFeatures int8_only = features(true, true, true, true, false, false);
    int8_only.amx_int8 = true;
    cases.push_back({int8_only, "avx512vnni"});
  }
#endif
#if defined(__aarch64__)
  cases.push_back({features(false, false, false, false, true, false), "neon"});
  cases.push_back({features(false, false, false, false, true, true), "neondot"});
#endif
  for (const auto& c : cases) {
    ++g_checks;
    std::string error;
    const std::string got = tsb::select_variant(c.f, "", &error);
    if (got != c.best) {
      std::printf("FAIL dispatch picked %s, expected %s\n", got.c_str(), c.best);
      ++g_failures;
    }
    for (const auto& name : tsb::compiled_variants()) {  // forcing: allowed exactly where it runs
      ++g_checks;
      error.clear();
      const std::string forced = tsb::select_variant(c.f, name, &error);
      if ((forced == name) != tsb::can_run(name, c.f) || (forced.empty() == error.empty())) {
        std::printf("FAIL forcing %s: got '%s', error '%s'\n", name.c_str(), forced.c_str(), error.c_str());
        ++g_failures;
      }
    }
  }
}

// A build with run.sh --x86-emulated runs the avx512vnni, avxvnni and amx
// code on any x86-64 CPU with AVX2, their AVX-512, VNNI and AMX instructions
// emulated (x86_emulation.h, amx_emulation.h).
bool emulated(const std::string& variant) {
#if defined(TSB_AMX_EMULATION)
  if (variant == "amx") return true;
#endif
#if defined(TSB_X86_EMULATION)
  return variant == "avx512vnni" || variant == "avxvnni";
#else
  (void)variant;
  return false;
#endif
}

// One plan run from several threads at once, each on its own tile range and
// rows, as the op layer's intra-op threads do: every thread starts without a
// tile configuration, so a tile instruction before the plan loads one faults
// (on hardware and in amx_emulation.h).
void check_threads(std::mt19937& g, const std::vector<std::string>& variants) {
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{16, 4}, {1, 4}}) {
    const Case c{48, 80, 300, rb, cb, 0.5, 0, false, true};
    const std::vector<int8_t> w = make_weight(g, c);
    const tsb::BcsrMatrix bm = tsb::pack_bcsr(w.data(), c.N, c.K, c.rb, c.cb);
    std::vector<uint8_t> x(c.M * c.K);
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& v : x) v = static_cast<uint8_t>(byte(g));
    std::vector<float> rq(c.N, 1e-3f), bs(c.N, 7.f);
    tsb::StaticArgs sa;
    sa.x = x.data();
    sa.ldx = c.K;
    sa.x_zero_point = 3;
    sa.ldy = c.N;
    sa.requant_scale = rq.data();
    sa.bias_scaled = bs.data();
    sa.y_zero_point = 100;
    std::vector<uint8_t> ref(c.M * c.N, 7);
    auto reference = tsb::make_plan(bm, "reference");
    sa.y = ref.data();
    reference->run_static(sa, 0, c.M, 0, reference->num_tiles());
    for (const auto& name : variants) {
      auto plan = make_test_plan(bm, name);
      const int64_t T = plan->num_tiles();
      std::vector<uint8_t> out(c.M * c.N, 7);
      tsb::StaticArgs a = sa;
      a.y = out.data();
      std::vector<std::thread> threads;
      for (int i = 0; i < 4; ++i) {  // rows [0, 32) or [32, 48), tiles [0, T/2) or [T/2, T)
        const int64_t m0 = i % 2 ? 32 : 0, m1 = i % 2 ? c.M : 32;
        const int64_t t0 = i / 2 ? T / 2 : 0, t1 = i / 2 ? T : T / 2;
        threads.emplace_back([&plan, a, m0, m1, t0, t1] { plan->run_static(a, m0, m1, t0, t1); });
      }
      for (auto& t : threads) t.join();
      ++g_checks;
      const int64_t d = count_diff(out, ref);
      if (d) {
        ++g_failures;
        std::printf("FAIL %s from 4 threads, block=%lldx%lld: %lld outputs differ\n", name.c_str(),
                    (long long)rb, (long long)cb, (long long)d);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const tsb::CpuFeatures f = tsb::cpu_features_reported();
  std::vector<std::string> variants;
  std::string skipped;
  for (const auto& v : tsb::compiled_variants()) {
    if (v == "reference") continue;
    if (tsb::can_run(v, f) || emulated(v)) {
      variants.push_back(v);
    } else {
      skipped += " " + v;
    }
  }
  // The amx variant also runs with tiles for every call (see kAmxTiles).
  std::vector<std::string> amx_variants;
  for (const auto& v : variants) {
    if (v == "amx") amx_variants = {"amx", kAmxTiles};
  }
  if (!amx_variants.empty()) variants.push_back(kAmxTiles);
  std::printf("variants under test:");
  for (const auto& v : variants) std::printf(" %s", v.c_str());
  std::printf("\nvariants this CPU cannot run:%s\n", skipped.empty() ? " none" : skipped.c_str());
  if (argc > 1 && std::string(argv[1]) == "--require") {
    // Every name after --require must be among the variants under test.
    for (int i = 2; i < argc; ++i) {
      bool found = false;
      for (const auto& v : variants) found |= v == argv[i];
      if (!found) {
        std::printf("FAIL required variant %s is not runnable here\n", argv[i]);
        ++g_failures;
      }
    }
  }

  check_dispatch();

  std::mt19937 g(1234);
  const int64_t blocks[] = {1, 2, 4, 8, 16};
  const int64_t Ms[] = {0, 1, 2, 3, 5, 8, 17};
  const int64_t Ns[] = {1, 7, 16, 33, 64};
  const int64_t Ks[] = {1, 5, 16, 31, 64, 130};
  int i = 0;
  for (int64_t rb : blocks) {
    for (int64_t cb : blocks) {
      for (int64_t N : Ns) {
        for (int64_t K : Ks) {
          ++i;
          Case c{Ms[i % 7], N, K, rb, cb, (i % 5) * 0.25, i % 3, (i % 2) == 0, (i % 4) < 2};
          run_case(g, c, variants);
        }
      }
    }
  }
  // Larger shapes around the fast paths' tile sizes.
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {8, 1}, {4, 4}, {1, 8}, {16, 1},
                        {1, 1}, {2, 2}, {1, 16}}) {
    for (int64_t M : {1, 4, 16, 33}) {
      for (int mode = 0; mode < 3; ++mode) {
        run_case(g, Case{M, 136, 520, rb, cb, 0.3, mode, mode == 1, mode != 2}, variants);
      }
      run_case(g, Case{M, 97, 260, rb, cb, 1.0, 0, false, true}, variants);
    }
  }
  // Tile edges: N around multiples of 8 (also past the last block row's
  // padding), K ending inside a 4- or 16-column group, batches that split into
  // groups of 32, 16 and 8 activation rows plus single rows, tight strides.
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {8, 1}, {16, 1}, {8, 2}, {16, 2},
                        {1, 1}, {2, 1}, {4, 2}, {1, 16}, {16, 16}}) {
    for (int64_t N : {9, 17, 23}) {
      for (int64_t K : {13, 47, 1000}) {
        for (int64_t M : {1, 7, 12, 25, 41, 57}) {
          ++i;
          Case c{M, N, K, rb, cb, 0.6, i % 3, (i % 2) == 0, (i % 4) < 2};
          c.tight = true;
          run_case(g, c, variants);
        }
      }
    }
  }
  // Every batch size from 1 to 40 rows, which the avx2 and avxvnni plans split
  // into passes of 1, 2, 4, 8, 16 or 32 rows differently, on both of their
  // layouts (row quads, column quads), for every kind of input, whole and in
  // uneven row and tile ranges (as threads split it); channels with 0 to 30
  // pieces or entries, so that every masked round of steps is taken.
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {2, 2}, {8, 1}, {16, 2}}) {
    for (int64_t M = 1; M <= 40; ++M) {
      Case c{M, 44, rb >= 8 ? 260 : 130, rb, cb, M % 4 == 0 ? 0.9 : 0.5, static_cast<int>(M % 5), M % 2 == 0, M % 3 == 0};
      c.tight = M % 7 == 0;
      run_case(g, c, variants);
    }
  }
  // Batches of 32 rows whose buffer is walked in panels, over several groups of tiles.
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {2, 2}, {1, 1}}) {
    for (int mode = 0; mode < 3; ++mode) {
      run_case(g, Case{40, 300, 1800, rb, cb, 0.2, mode, mode == 1, mode != 2}, variants);
    }
  }
  // Activations below 128 (the batches' plain vpmaddubsw path), with and without
  // panels, at every batch split.
  for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {4, 4}, {1, 1}, {8, 1}}) {
    for (int64_t M : {2, 8, 12, 17, 24, 40}) {
      for (int mode : {3, 4}) {
        run_case(g, Case{M, 44, 300, rb, cb, 0.5, mode, M % 2 == 0, mode == 3}, variants);
      }
    }
    run_case(g, Case{40, 60, 1800, rb, cb, 0.2, 3, false, true}, variants);
    run_case(g, Case{33, 60, 1800, rb, cb, 0.2, 4, true, true}, variants);
  }
  // The amx variant on every block shape, every batch size its paths split
  // differently (partial groups of 16 rows, one to four groups per pass,
  // several passes), empty, sparse, half and full densities, with K ending
  // inside a 64-column chunk; and K over 16 nonempty chunks, so that the fine
  // path's sums wait between panels of expanded weight tiles.
  if (!amx_variants.empty()) {
    const double densities[] = {0.0, 0.05, 0.5, 1.0};
    int j = 0;
    for (int64_t rb : blocks) {
      for (int64_t cb : blocks) {
        for (int64_t M : {0, 1, 2, 3, 5, 8, 16, 17, 33, 64}) {
          for (double d : densities) {
            ++j;
            Case c{M, j % 3 == 0 ? 16 : (j % 3 == 1 ? 33 : 40), j % 2 ? 130 : 64, rb, cb, d, j % 5, j % 2 == 0, j % 4 < 2};
            c.tight = j % 3 == 0;
            run_case(g, c, amx_variants);
          }
        }
      }
    }
    for (auto [rb, cb] : {std::pair<int64_t, int64_t>{1, 4}, {8, 1}, {2, 2}, {16, 4}, {16, 1}}) {
      for (int64_t M : {3, 40, 70}) {
        Case c{M, 40, 2200, rb, cb, 0.5, static_cast<int>(M % 3), M == 40, true};
        c.tight = M == 70;
        run_case(g, c, amx_variants);
      }
    }
    check_threads(g, amx_variants);
  }
  check_quantize_activations(g, variants);
  check_finite_min_max(g, variants);
  // The largest K with exact int32 accumulation, at full range.
  run_case(g, Case{2, 9, tsb::kMaxInFeatures, 1, 4, 1.0, 1, false, false}, variants);
  run_case(g, Case{3, 16, tsb::kMaxInFeatures, 8, 1, 1.0, 2, true, true}, variants);

  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// Throughput of the instruction mixes the avx512vnni kernels are built from,
// in core cycles, on this CPU (x86-64 with AVX-512 VNNI). It is what bounds
// each kernel (docs/benchmark.md, "What limits each target"):
//
//   bash scripts/vnni_limits.sh
//
// The core clock is measured with a chain of dependent integer adds (one per
// cycle on every x86 core), so the figures are cycles even where the clock
// differs from the nominal one. Each figure is the best of several runs.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "../csrc/kernels/x86_target.h"

#define TSB_VNNI __attribute__((noinline))

namespace {

template <class F>
double best_ns(F f) {
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Nanoseconds per cycle: 64 dependent adds per iteration.
double ns_per_cycle() {
  const long iters = 2000000;
  const double ns = best_ns([&] {
    uint64_t x = 0;
    for (long i = 0; i < iters; ++i) {
      asm volatile(
          ".rept 64\n\t"
          "add $1, %0\n\t"
          ".endr"
          : "+r"(x));
    }
  });
  return ns / (iters * 64.0);
}

volatile int32_t sink;

}  // namespace

TSB_TARGET_BEGIN("avx2,avx512f,avx512bw,avx512vl,avx512vnni")
namespace {

// C independent accumulators, each fed by `Op` once per iteration.
enum class Mix { kDpbusd, kPerm2Dpbusd, kPermDpbusd };

template <Mix kMix, int C>
TSB_VNNI int32_t mix(long iters) {
  __m512i acc[C], idx[C];
  __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x05060708), w = _mm512_set1_epi32(0x01010101);
  for (int i = 0; i < C; ++i) {
    acc[i] = _mm512_set1_epi32(i);
    idx[i] = _mm512_set1_epi32(3 * i);
  }
  for (long t = 0; t < iters; ++t) {
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) {
      if constexpr (kMix == Mix::kDpbusd) acc[i] = _mm512_dpbusd_epi32(acc[i], a, w);
      if constexpr (kMix == Mix::kPerm2Dpbusd) {
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_permutex2var_epi32(a, idx[i], b), w);
      }
      if constexpr (kMix == Mix::kPermDpbusd) {
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_permutexvar_epi32(idx[i], a), w);
      }
    }
    asm volatile("" : "+v"(a), "+v"(b), "+v"(w));
  }
  __m512i s = acc[0];
  for (int i = 1; i < C; ++i) s = _mm512_add_epi32(s, acc[i]);
  return _mm512_reduce_add_epi32(s);
}

// The batch kernel's inner loop (bcsr_batch): per piece, a column index
// load, a weight word broadcast and G activation vectors loaded from the
// re-laid batch, one vpdpbusd each; four accumulator sets; channels of
// random sorted quads at the given density over `quads` quads.
template <int G>
TSB_VNNI int32_t batch(const __m512i* buf, const int32_t* col, const int32_t* w, const int64_t* start,
                       int64_t channels) {
  __m512i total = _mm512_setzero_si512();
  for (int64_t c = 0; c < channels; ++c) {
    __m512i a0[G], a1[G], a2[G], a3[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = a2[g] = a3[g] = _mm512_setzero_si512();
    auto piece = [&](__m512i (&acc)[G], int64_t j) {
      const __m512i wb = _mm512_set1_epi32(w[j]);
      const __m512i* xq = buf + int64_t{col[j]} * G;
      for (int g = 0; g < G; ++g) acc[g] = _mm512_dpbusd_epi32(acc[g], _mm512_load_si512(xq + g), wb);
    };
    int64_t j = start[c];
    for (; j + 4 <= start[c + 1]; j += 4) {
      piece(a0, j);
      piece(a1, j + 1);
      piece(a2, j + 2);
      piece(a3, j + 3);
    }
    for (; j < start[c + 1]; ++j) piece(a0, j);
    for (int g = 0; g < G; ++g) {
      total = _mm512_add_epi32(total, _mm512_add_epi32(_mm512_add_epi32(a0[g], a1[g]), _mm512_add_epi32(a2[g], a3[g])));
    }
  }
  return _mm512_reduce_add_epi32(total);
}

template <Mix kMix, int C>
double mix_cycles(double cycle_ns) {
  const long iters = 2000000;
  return best_ns([&] { sink = mix<kMix, C>(iters); }) / (iters * C * cycle_ns);
}

template <int G>
void batch_row(double cycle_ns, int64_t quads, double density) {
  std::mt19937 rng(1);
  std::bernoulli_distribution keep(density);
  std::vector<int32_t> col, w;
  std::vector<int64_t> start{0};
  const int64_t channels = 2048;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t q = 0; q < quads; ++q) {
      if (keep(rng)) {
        col.push_back(static_cast<int32_t>(q));
        w.push_back(static_cast<int32_t>(rng()));
      }
    }
    start.push_back(static_cast<int64_t>(col.size()));
  }
  std::vector<int32_t> buf(static_cast<size_t>(quads * G * 16) + 16);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<int32_t>(rng());
  // 64-byte aligned start within buf.
  const auto* aligned = reinterpret_cast<const __m512i*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
  const double ns = best_ns([&] { sink = batch<G>(aligned, col.data(), w.data(), start.data(), channels); });
  const double per_piece = ns / (static_cast<double>(col.size()) * cycle_ns);
  std::printf("  batch, %2d rows, buffer %4lld KB: %.2f cycles per piece, %.2f per vpdpbusd\n", 16 * G,
              static_cast<long long>(quads * G * 64 / 1024), per_piece, per_piece / G);
}

}  // namespace
TSB_TARGET_END

int main() {
  if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw")) {
    std::printf("this CPU has no AVX-512 VNNI\n");
    return 0;
  }
  const double cycle_ns = ns_per_cycle();
  std::printf("core clock: %.2f GHz (measured)\n", 1.0 / cycle_ns);
  std::printf("vpdpbusd zmm, 1 chain (latency):     %.2f cycles\n", mix_cycles<Mix::kDpbusd, 1>(cycle_ns));
  std::printf("vpdpbusd zmm, 12 chains:             %.2f cycles each\n", mix_cycles<Mix::kDpbusd, 12>(cycle_ns));
  std::printf("vpermt2d + vpdpbusd, 8 chains:       %.2f cycles per pair (quad slots, per row and step)\n",
              mix_cycles<Mix::kPerm2Dpbusd, 8>(cycle_ns));
  std::printf("vpermd + vpdpbusd, 8 chains:         %.2f cycles per pair\n",
              mix_cycles<Mix::kPermDpbusd, 8>(cycle_ns));
  std::printf("batch kernel loop, 80%% sparsity (1x4 pieces at density 0.2):\n");
  for (int64_t quads : {128, 1024}) {
    batch_row<1>(cycle_ns, quads, 0.2);
    batch_row<2>(cycle_ns, quads, 0.2);
    batch_row<4>(cycle_ns, quads, 0.2);
  }
  return 0;
}

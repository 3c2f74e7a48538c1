// Kernel-only timing of the torch-free core: every variant this CPU runs, on
// the same random block-sparse weight and activations, without the op layer.
//
//   bash scripts/kernel_bench.sh                      default grid
//   bash scripts/kernel_bench.sh N K M rb cb sparsity [variant...]
//   TSB_BENCH_X_MAX=127 bash scripts/kernel_bench.sh ...   activations drawn from
//                                                           0..127 (default 0..255)
//   TSB_BENCH_LAYERS=8 bash scripts/kernel_bench.sh ...    calls cycle through 8
//                                                           different weights of the
//                                                           shape, as the layers of a
//                                                           model do (default 1)
//
// Prints the median time of run_static over all tiles, one thread, in us.
// With one weight, every call repeats the same branches and addresses, which
// a CPU partly learns; several layers are closer to a model's inference.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../csrc/kernels/sparse_core.h"

using namespace tsb;

namespace {

double median_us(const std::vector<double>& v) {
  std::vector<double> s = v;
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

// A random N x K weight with whole rb x cb blocks zeroed at the given
// sparsity, packed.
BcsrMatrix random_weight(std::mt19937& rng, int64_t N, int64_t K, int64_t rb, int64_t cb, double sparsity) {
  const int64_t nbr = N / rb, nbc = K / cb;
  std::vector<int8_t> w(N * K, 0);
  std::vector<int64_t> blocks(nbr * nbc);
  for (int64_t i = 0; i < nbr * nbc; ++i) blocks[i] = i;
  std::shuffle(blocks.begin(), blocks.end(), rng);
  const int64_t keep = nbr * nbc - static_cast<int64_t>(sparsity * nbr * nbc + 0.5);
  std::uniform_int_distribution<int> wd(-127, 127);
  for (int64_t b = 0; b < keep; ++b) {
    const int64_t br = blocks[b] / nbc, bc = blocks[b] % nbc;
    for (int64_t r = 0; r < rb; ++r)
      for (int64_t c = 0; c < cb; ++c) {
        int v = wd(rng);
        w[(br * rb + r) * K + bc * cb + c] = static_cast<int8_t>(v == 0 ? 1 : v);
      }
  }
  return pack_bcsr(w.data(), N, K, rb, cb);
}

void bench(int64_t N, int64_t K, int64_t M, int64_t rb, int64_t cb, double sparsity,
           const std::vector<std::string>& variants) {
  std::mt19937 rng(42);
  const char* layers_env = std::getenv("TSB_BENCH_LAYERS");
  const int layers = std::max(1, layers_env ? std::atoi(layers_env) : 1);
  std::vector<BcsrMatrix> weights;
  for (int l = 0; l < layers; ++l) weights.push_back(random_weight(rng, N, K, rb, cb, sparsity));
  const BcsrMatrix& m = weights[0];
  const int64_t kp = m.padded_k();
  const char* x_max = std::getenv("TSB_BENCH_X_MAX");
  std::uniform_int_distribution<int> xd(0, x_max ? std::atoi(x_max) : 255);
  std::vector<uint8_t> x(M * kp);
  for (auto& v : x) v = static_cast<uint8_t>(xd(rng));
  std::vector<uint8_t> y(M * N);
  std::vector<float> rq(m.padded_n(), 0.001f), bs(m.padded_n(), 1.0f);
  StaticArgs a;
  a.x = x.data(); a.ldx = kp; a.x_zero_point = 128; a.y = y.data(); a.ldy = N;
  a.requant_scale = rq.data(); a.bias_scaled = bs.data(); a.y_zero_point = 128;
  std::printf("%5lldx%-5lld M=%-4lld %lldx%lld %3.0f%%", (long long)N, (long long)K, (long long)M,
              (long long)rb, (long long)cb, sparsity * 100);
  for (const auto& v : variants) {
    std::vector<std::unique_ptr<KernelPlan>> plans;
    for (const BcsrMatrix& wl : weights) plans.push_back(make_plan(wl, v));
    size_t next = 0;
    auto once = [&] {
      const KernelPlan& plan = *plans[next];
      next = (next + 1) % plans.size();
      plan.run_static(a, 0, M, 0, plan.num_tiles());
    };
    once();
    auto t0 = std::chrono::steady_clock::now();
    once();
    double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int iters = std::max(1, static_cast<int>(0.02 / std::max(one, 1e-7)));
    std::vector<double> samples;
    for (int s = 0; s < 15; ++s) {
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) once();
      samples.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e6 / iters);
    }
    std::printf("  %s %8.2f us", v.c_str(), median_us(samples));
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> variants;
  const CpuFeatures f = tsb::cpu_features_reported();
  if (argc >= 7) {
    for (int i = 7; i < argc; ++i) variants.push_back(argv[i]);
    if (variants.empty()) variants.push_back(select_variant(f, "", nullptr));
    bench(std::atoll(argv[1]), std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]),
          std::atoll(argv[5]), std::atof(argv[6]), variants);
    return 0;
  }
  variants.push_back(select_variant(f, "", nullptr));
  const int64_t shapes[3][2] = {{768, 768}, {3072, 768}, {768, 3072}};
  for (auto blk : {std::pair<int, int>{1, 4}, {8, 1}})
    for (double sp : {0.5, 0.8, 0.9})
      for (int64_t M : {1, 16, 128})
        for (auto& s : shapes) bench(s[0], s[1], M, blk.first, blk.second, sp, variants);
  return 0;
}

// libFuzzer harness for the torch-free kernel core (see fuzz.sh).
//
// Each input describes a block-sparse matrix as it could arrive from a file:
// sizes, block shape, row pointers, column indices and values, either built
// from a dense weight and then mutated, or taken raw. validate_bcsr must
// either reject it or accept a matrix that every function of the core handles:
// unpack, row_sums, re-packing, and every kernel variant this CPU runs, whose
// static and dynamic outputs must equal an exact int64 dense product followed
// by the reference epilogues, for any split of the work into row and tile ranges.
// A mismatch aborts with a message; out-of-bounds accesses and undefined
// behaviour are caught by the sanitizers.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/kernels/requantize.h"
#include "../../csrc/kernels/sparse_core.h"

namespace {

// Matrices with more padded weights than this are validated but not run.
constexpr int64_t kMaxDenseElements = int64_t{1} << 18;
constexpr int64_t kMaxRows = 40;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_bcsr: %s: %s\n", what, detail.c_str());
  std::abort();
}

std::string describe(const tsb::BcsrMatrix& m) {
  return "N=" + std::to_string(m.N) + " K=" + std::to_string(m.K) + " block=" +
         std::to_string(m.rb) + "x" + std::to_string(m.cb) + " blocks=" +
         std::to_string(m.num_blocks());
}

int64_t pick_block_size(FuzzedDataProvider& d) {
  static const int64_t sizes[] = {1, 2, 4, 8, 16};
  if (d.ConsumeIntegralInRange<int>(0, 15) == 0) return d.ConsumeIntegral<int64_t>();
  return sizes[d.ConsumeIntegralInRange<int>(0, 4)];
}

int64_t pick_size(FuzzedDataProvider& d, int64_t usual_max) {
  switch (d.ConsumeIntegralInRange<int>(0, 15)) {
    case 0: return d.ConsumeIntegral<int64_t>();
    case 1: return d.ConsumeIntegralInRange<int64_t>(tsb::kMaxInFeatures - 20,
                                                     tsb::kMaxInFeatures + 20);
    case 2: return d.ConsumeIntegralInRange<int64_t>(-2, 0);
    default: return d.ConsumeIntegralInRange<int64_t>(1, usual_max);
  }
}

// A valid matrix for (N, K, rb, cb): a block is stored when the input says so,
// with values from the input and zeros in the padding. `dense` receives the weight.
tsb::BcsrMatrix build_from_input(FuzzedDataProvider& d, int64_t N, int64_t K, int64_t rb,
                                 int64_t cb, std::vector<int8_t>* dense) {
  dense->assign(N * K, 0);
  const uint8_t density = d.ConsumeIntegral<uint8_t>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      if (d.remaining_bytes() == 0) break;
      (*dense)[n * K + k] = d.ConsumeIntegral<int8_t>();
    }
  }
  const int64_t nbr = (N + rb - 1) / rb, nbc = (K + cb - 1) / cb;
  for (int64_t br = 0; br < nbr; ++br) {
    for (int64_t bc = 0; bc < nbc; ++bc) {
      if (d.ConsumeIntegral<uint8_t>() <= density) continue;
      for (int64_t n = br * rb; n < std::min(N, br * rb + rb); ++n) {
        for (int64_t k = bc * cb; k < std::min(K, bc * cb + cb); ++k) (*dense)[n * K + k] = 0;
      }
    }
  }
  return tsb::pack_bcsr(dense->data(), N, K, rb, cb);
}

template <typename T>
void mutate_vector(FuzzedDataProvider& d, std::vector<T>* v) {
  switch (d.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      v->push_back(d.ConsumeIntegral<T>());
      break;
    case 1:
      if (!v->empty()) v->pop_back();
      break;
    case 2:
      if (!v->empty()) {
        (*v)[d.ConsumeIntegralInRange<size_t>(0, v->size() - 1)] = d.ConsumeIntegral<T>();
      }
      break;
    case 3:
      if (!v->empty()) {
        T& e = (*v)[d.ConsumeIntegralInRange<size_t>(0, v->size() - 1)];
        e = static_cast<T>(int64_t{e} + d.ConsumeIntegralInRange<int>(-2, 2));
      }
      break;
    default:
      if (v->size() >= 2) {
        const size_t i = d.ConsumeIntegralInRange<size_t>(0, v->size() - 2);
        std::swap((*v)[i], (*v)[i + 1]);
      }
      break;
  }
}

void mutate(FuzzedDataProvider& d, tsb::BcsrMatrix* m) {
  const int rounds = d.ConsumeIntegralInRange<int>(0, 3);
  for (int i = 0; i < rounds; ++i) {
    switch (d.ConsumeIntegralInRange<int>(0, 4)) {
      case 0: mutate_vector(d, &m->row_ptr); break;
      case 1: mutate_vector(d, &m->col_idx); break;
      case 2: mutate_vector(d, &m->values); break;
      case 3: m->N += d.ConsumeIntegralInRange<int64_t>(-17, 17); break;
      default: m->K += d.ConsumeIntegralInRange<int64_t>(-17, 17); break;
    }
  }
}

// Every field straight from the input: mostly rejected, which is the point.
tsb::BcsrMatrix build_raw(FuzzedDataProvider& d, int64_t N, int64_t K, int64_t rb, int64_t cb) {
  tsb::BcsrMatrix m;
  m.N = N;
  m.K = K;
  m.rb = rb;
  m.cb = cb;
  const size_t rows = d.ConsumeIntegralInRange<size_t>(0, 64);
  int32_t prev = 0;
  for (size_t i = 0; i < rows; ++i) {
    prev = d.ConsumeBool() ? d.ConsumeIntegral<int32_t>()
                           : static_cast<int32_t>(int64_t{prev} + d.ConsumeIntegralInRange<int>(-1, 3));
    m.row_ptr.push_back(prev);
  }
  const size_t blocks = d.ConsumeIntegralInRange<size_t>(0, 128);
  for (size_t i = 0; i < blocks; ++i) {
    m.col_idx.push_back(d.ConsumeBool() ? d.ConsumeIntegral<int32_t>()
                                        : d.ConsumeIntegralInRange<int32_t>(-1, 8));
  }
  const size_t bs = rb >= 1 && rb <= 16 && cb >= 1 && cb <= 16 ? rb * cb : 1;
  size_t nvalues = blocks * bs;
  if (d.ConsumeBool()) nvalues = d.ConsumeIntegralInRange<size_t>(0, 4096);
  for (size_t i = 0; i < nvalues; ++i) m.values.push_back(d.ConsumeIntegral<int8_t>());
  return m;
}

// Stored blocks that are all zero removed: what pack_bcsr gives for the same weight.
tsb::BcsrMatrix drop_zero_blocks(const tsb::BcsrMatrix& m) {
  tsb::BcsrMatrix c = m;
  c.col_idx.clear();
  c.values.clear();
  const int64_t bs = m.rb * m.cb;
  for (int64_t br = 0; br < m.block_rows(); ++br) {
    for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
      const int8_t* v = m.values.data() + j * bs;
      bool nonzero = false;
      for (int64_t i = 0; i < bs; ++i) nonzero |= v[i] != 0;
      if (!nonzero) continue;
      c.col_idx.push_back(m.col_idx[j]);
      c.values.insert(c.values.end(), v, v + bs);
    }
    c.row_ptr[br + 1] = static_cast<int32_t>(c.col_idx.size());
  }
  return c;
}

bool same_matrix(const tsb::BcsrMatrix& a, const tsb::BcsrMatrix& b) {
  return a.N == b.N && a.K == b.K && a.rb == b.rb && a.cb == b.cb && a.row_ptr == b.row_ptr &&
         a.col_idx == b.col_idx && a.values == b.values;
}

float pick_scale(FuzzedDataProvider& d) {
  switch (d.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return 1.f;
    case 1: return std::ldexp(1.f, d.ConsumeIntegralInRange<int>(-40, 20));
    default: return d.ConsumeFloatingPointInRange<float>(1e-6f, 10.f);
  }
}

// Runs `plan` over rows [0, M) and all tiles, in the pieces the input chooses.
template <typename Run>
void run_in_pieces(FuzzedDataProvider& d, int64_t M, int64_t T, const Run& run) {
  const int64_t m_cut = M ? d.ConsumeIntegralInRange<int64_t>(0, M) : 0;
  const int64_t t_cut = T ? d.ConsumeIntegralInRange<int64_t>(0, T) : 0;
  for (auto [m0, m1] : {std::pair<int64_t, int64_t>{0, m_cut}, {m_cut, M}}) {
    for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, t_cut}, {t_cut, T}}) {
      if (m0 < m1 && t0 < t1) run(m0, m1, t0, t1);
    }
  }
}

void check_valid_matrix(FuzzedDataProvider& d, const tsb::BcsrMatrix& m,
                        const std::vector<int8_t>* expected_dense) {
  const int64_t N = m.N, K = m.K, Np = m.padded_n(), Kp = m.padded_k();
  std::vector<int8_t> w(N * K, 99);
  tsb::unpack_bcsr(m, w.data());
  if (expected_dense && w != *expected_dense) fail("unpack(pack(w)) != w", describe(m));

  const std::vector<int32_t> sums = tsb::row_sums(m);
  if (static_cast<int64_t>(sums.size()) != Np) fail("row_sums size", describe(m));
  for (int64_t n = 0; n < Np; ++n) {
    int64_t s = 0;
    for (int64_t k = 0; n < N && k < K; ++k) s += w[n * K + k];
    if (sums[n] != s) fail("row_sums", describe(m) + " n=" + std::to_string(n));
  }

  const tsb::BcsrMatrix repacked = tsb::pack_bcsr(w.data(), N, K, m.rb, m.cb);
  if (!tsb::validate_bcsr(repacked).empty()) fail("pack gave an invalid matrix", describe(m));
  if (!same_matrix(repacked, drop_zero_blocks(m))) fail("pack(unpack(m)) != m", describe(m));

  // Inputs: M rows of exactly Kp activations (the padding columns hold
  // arbitrary values: they meet zero weights), outputs of exactly N columns.
  const int64_t M = d.ConsumeIntegralInRange<int64_t>(0, kMaxRows);
  std::vector<uint8_t> x(M * Kp);
  const bool saturate = d.ConsumeBool();
  for (auto& v : x) v = saturate ? 255 : d.ConsumeIntegral<uint8_t>();
  const int32_t x_zp = saturate ? 0 : d.ConsumeIntegral<uint8_t>();
  std::vector<int32_t> acc(M * N);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += (int64_t{x[i * Kp + k]} - x_zp) * w[n * K + k];
      if (s != static_cast<int32_t>(s)) fail("accumulator beyond int32", describe(m));
      acc[i * N + n] = static_cast<int32_t>(s);
    }
  }

  std::vector<float> requant(Np), bias_scaled(Np), dequant(Np), bias(Np);
  const bool per_channel = d.ConsumeBool();
  const float common = pick_scale(d);
  for (int64_t n = 0; n < Np; ++n) {
    requant[n] = per_channel ? pick_scale(d) : common;
    dequant[n] = per_channel ? pick_scale(d) : common;
    bias[n] = d.ConsumeFloatingPointInRange<float>(-1e4f, 1e4f);
    bias_scaled[n] = d.ConsumeFloatingPointInRange<float>(-1e6f, 1e6f);
  }
  const int32_t y_zp = d.ConsumeIntegral<uint8_t>();
  const bool relu = d.ConsumeBool();
  std::vector<uint8_t> want_s(M * N);
  std::vector<float> want_d(M * N);
  for (int64_t i = 0; i < M * N; ++i) {
    const int64_t n = i % N;
    want_s[i] = tsb::requantize_fbgemm_compatible(acc[i], bias_scaled[n], requant[n], y_zp,
                                                  relu ? y_zp : 0, 255);
    want_d[i] = tsb::dequantize_output(acc[i], dequant[n], bias[n], relu);
  }

  tsb::StaticArgs sa;
  sa.x = x.data();
  sa.ldx = Kp;
  sa.x_zero_point = x_zp;
  sa.ldy = N;
  sa.requant_scale = requant.data();
  sa.bias_scaled = bias_scaled.data();
  sa.y_zero_point = y_zp;
  sa.qmin = relu ? y_zp : 0;
  sa.qmax = 255;
  tsb::DynamicArgs da;
  da.x = x.data();
  da.ldx = Kp;
  da.x_zero_point = x_zp;
  da.ldy = N;
  da.dequant_scale = dequant.data();
  da.bias = bias.data();
  da.relu = relu;

  const tsb::CpuFeatures features = tsb::cpu_features_reported();
  for (const std::string& variant : tsb::compiled_variants()) {
    if (!tsb::can_run(variant, features)) continue;
    const auto plan = tsb::make_plan(m, variant);
    if (plan->name() != variant) fail("plan name", variant + " != " + plan->name());
    if (plan->packed_bytes() == 0) fail("packed_bytes", describe(m));
    const std::string where = variant + " " + describe(m) + " M=" + std::to_string(M);
    std::vector<uint8_t> got_s(M * N);
    std::vector<float> got_d(M * N);
    sa.y = got_s.data();
    da.y = got_d.data();
    run_in_pieces(d, M, plan->num_tiles(), [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
      plan->run_static(sa, m0, m1, t0, t1);
    });
    run_in_pieces(d, M, plan->num_tiles(), [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
      plan->run_dynamic(da, m0, m1, t0, t1);
    });
    if (got_s != want_s) fail("static output differs from the exact reference", where);
    if (!want_d.empty() &&
        std::memcmp(got_d.data(), want_d.data(), want_d.size() * sizeof(float)) != 0) {
      fail("dynamic output differs from the exact reference", where);
    }

    // Activation quantization of finite values, against the reference rounding.
    const size_t nq = d.ConsumeIntegralInRange<size_t>(0, 67);
    std::vector<float> xf(nq);
    for (auto& v : xf) v = d.ConsumeFloatingPointInRange<float>(-1e6f, 1e6f);
    const float inv_scale = pick_scale(d);
    const int32_t q_zp = d.ConsumeIntegral<uint8_t>();
    std::vector<uint8_t> q_ref(nq), q_got(nq);
    tsb::quantize_activations_reference(xf.data(), nq, inv_scale, q_zp, q_ref.data());
    plan->quantize_activations(xf.data(), nq, inv_scale, q_zp, q_got.data());
    if (q_ref != q_got) fail("quantize_activations differs from the reference", where);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider d(data, size);
  const int64_t rb = pick_block_size(d), cb = pick_block_size(d);
  const int64_t N = pick_size(d, 40), K = pick_size(d, 80);
  const bool small = tsb::check_shape(N, K, rb, cb).empty() &&
                     (N + rb - 1) / rb * rb * ((K + cb - 1) / cb * cb) <= kMaxDenseElements;
  tsb::BcsrMatrix m;
  std::vector<int8_t> dense;
  bool mutated = true;
  if (small && d.ConsumeIntegralInRange<int>(0, 7) != 0) {
    m = build_from_input(d, N, K, rb, cb, &dense);
    if (!tsb::validate_bcsr(m).empty()) fail("pack gave an invalid matrix", describe(m));
    mutated = d.ConsumeBool();
    if (mutated) mutate(d, &m);
  } else {
    m = build_raw(d, N, K, rb, cb);
  }
  if (!tsb::validate_bcsr(m).empty()) return 0;
  if (m.padded_n() * m.padded_k() > kMaxDenseElements) return 0;
  check_valid_matrix(d, m, mutated ? nullptr : &dense);
  return 0;
}

// The reference kernel: portable C++, any block shape, the oracle that every
// other variant is tested against. Work is proportional to the stored blocks.
#include "kernel_registry.h"
#include "requantize.h"
#include "sparse_core.h"

#include <cmath>

namespace tsb {
namespace {

class ReferencePlan final : public KernelPlan {
 public:
  explicit ReferencePlan(const BcsrMatrix& m) : m_(m), row_sum_(row_sums(m)) {}

  const char* name() const override { return "reference"; }
  int64_t num_tiles() const override { return m_.block_rows(); }
  int64_t work_before(int64_t t) const override { return t + int64_t{m_.row_ptr[t]} * m_.rb * m_.cb; }
  size_t packed_bytes() const override {
    return m_.row_ptr.size() * sizeof(int32_t) + m_.col_idx.size() * sizeof(int32_t) +
           m_.values.size() + row_sum_.size() * sizeof(int32_t);
  }

  // acc[r] = sum_k (x[k] - x_zp) * w[br*rb + r][k] for one input row.
  void accumulate(const uint8_t* x, int32_t x_zp, int64_t br, int32_t* acc) const {
    const int64_t rb = m_.rb, cb = m_.cb, bs = rb * cb;
    for (int64_t r = 0; r < rb; ++r) acc[r] = 0;
    for (int64_t j = m_.row_ptr[br]; j < m_.row_ptr[br + 1]; ++j) {
      const uint8_t* xb = x + int64_t{m_.col_idx[j]} * cb;
      const int8_t* wb = m_.values.data() + j * bs;
      for (int64_t r = 0; r < rb; ++r) {
        int32_t s = 0;
        for (int64_t c = 0; c < cb; ++c) s += int32_t{wb[r * cb + c]} * int32_t{xb[c]};
        acc[r] += s;
      }
    }
    for (int64_t r = 0; r < rb; ++r) acc[r] -= x_zp * row_sum_[br * rb + r];
  }

  void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                  int64_t t_end) const override {
    int32_t acc[16];
    for (int64_t mi = m_begin; mi < m_end; ++mi) {
      const uint8_t* x = a.x + mi * a.ldx;
      uint8_t* y = a.y + mi * a.ldy;
      for (int64_t br = t_begin; br < t_end; ++br) {
        accumulate(x, a.x_zero_point, br, acc);
        for (int64_t r = 0; r < m_.rb; ++r) {
          const int64_t n = br * m_.rb + r;
          if (n >= m_.N) break;
          y[n] = requantize_fbgemm_compatible(acc[r], a.bias_scaled[n], a.requant_scale[n],
                                              a.y_zero_point, a.qmin, a.qmax);
        }
      }
    }
  }

  void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                   int64_t t_end) const override {
    int32_t acc[16];
    for (int64_t mi = m_begin; mi < m_end; ++mi) {
      const uint8_t* x = a.x + mi * a.ldx;
      float* y = a.y + mi * a.ldy;
      for (int64_t br = t_begin; br < t_end; ++br) {
        accumulate(x, a.x_zero_point, br, acc);
        for (int64_t r = 0; r < m_.rb; ++r) {
          const int64_t n = br * m_.rb + r;
          if (n >= m_.N) break;
          y[n] = dequantize_output(acc[r], a.dequant_scale[n], a.bias[n], a.relu);
        }
      }
    }
  }

 private:
  BcsrMatrix m_;
  std::vector<int32_t> row_sum_;
};

}  // namespace

void quantize_activations_reference(const float* x, int64_t n, float inv_scale, int32_t zp,
                                    uint8_t* q) {
  const float lo = static_cast<float>(-zp), hi = static_cast<float>(255 - zp);
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv_scale);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(v) + zp);
  }
}

bool finite_min_max_reference(const float* x, int64_t n, float* lo, float* hi) {
  float mn = x[0], mx = x[0];
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
    finite &= std::isfinite(x[i]);
  }
  *lo = mn;
  *hi = mx;
  return finite;
}

std::unique_ptr<KernelPlan> make_reference_plan(const BcsrMatrix& m) {
  return std::make_unique<ReferencePlan>(m);
}

}  // namespace tsb

// Vector helpers shared by the x86 kernel variants (avx2_plan.h,
// avx512vnni.cpp): epilogues, the dynamic op's activation scan and
// quantization, transposes, per-thread scratch.
//
// Include this inside the including file's TSB_TARGET_BEGIN region
// (x86_target.h), after x86_layouts.h outside it: the definitions here live in
// an unnamed namespace, so every variant compiles its own copy for its own
// ISA and none of them can leak into code that runs on a CPU without that ISA.
#pragma once

#if !defined(__x86_64__) && !defined(_M_X64)
#error "x86_common.h is for x86-64 variants only"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "sparse_core.h"
#include "x86_layouts.h"

// Marks the batch kernels and GEMVs of the plans as functions of their own:
// inlined into the plan's run(), they would make one very large function,
// register-allocated as a whole, which costs the hot loops of every path.
// Each starts on a 64-byte boundary, so that where the linker places it does
// not change how its loops fall into the instruction fetch blocks.
#define TSB_KERNEL_NOINLINE __attribute__((noinline, aligned(64)))

namespace tsb {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Storage units of the activation buffers (aligned for vector loads; Vec64
// to cache lines, for buffers whose records span two 32-byte vectors).
struct alignas(32) Vec32 {
  uint8_t b[32];
};

struct alignas(64) Vec64 {
  uint8_t b[64];
};

// All-ones in lanes i < n.
inline __m256i lanes_below(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// In place: r[j][i] <- r[i][j] for an 8x8 matrix of int32.
inline void transpose_8x8_epi32(__m256i r[8]) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// Per-thread scratch, grown on demand and kept for the thread's next calls.
template <class T>
T* thread_scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Requantizing epilogue for 8 output channels n0.. of one output row.
class StaticEpilogue {
 public:
  explicit StaticEpilogue(const StaticArgs& a)
      : a_(a),
        lo_(_mm256_set1_ps(static_cast<float>(a.qmin - a.y_zero_point))),
        hi_(_mm256_set1_ps(static_cast<float>(a.qmax - a.y_zero_point))),
        y_zp_(_mm256_set1_epi32(a.y_zero_point)) {}

  // acc holds sum x*w - x_zp*row_sum; only lanes < nv are stored.
  void store(int64_t m, int64_t n0, int nv, __m256i acc) const {
    __m256 rq, bs;
    if (nv == 8) {
      rq = _mm256_loadu_ps(a_.requant_scale + n0);
      bs = _mm256_loadu_ps(a_.bias_scaled + n0);
    } else {
      const __m256i mask = lanes_below(nv);
      rq = _mm256_maskload_ps(a_.requant_scale + n0, mask);
      bs = _mm256_maskload_ps(a_.bias_scaled + n0, mask);
    }
    __m256 v = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(acc), bs), rq);
    v = _mm256_min_ps(_mm256_max_ps(v, lo_), hi_);
    // Round half to even (default MXCSR); the clamp keeps the sum in [qmin, qmax].
    const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), y_zp_);
    const __m128i q16 = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    const __m128i q8 = _mm_packus_epi16(q16, q16);
    uint8_t* y = a_.y + m * a_.ldy + n0;
    if (nv == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y), q8);
    } else {
      alignas(16) uint8_t t[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(t), q8);
      std::memcpy(y, t, static_cast<size_t>(nv));
    }
  }

 private:
  const StaticArgs& a_;
  __m256 lo_, hi_;
  __m256i y_zp_;
};

// Dequantizing epilogue: a multiply, then an add, then max(y, +0) with ReLU.
class DynamicEpilogue {
 public:
  explicit DynamicEpilogue(const DynamicArgs& a) : a_(a) {}

  void store(int64_t m, int64_t n0, int nv, __m256i acc) const {
    float* y = a_.y + m * a_.ldy + n0;
    if (nv == 8) {
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(a_.dequant_scale + n0));
      v = _mm256_add_ps(v, _mm256_loadu_ps(a_.bias + n0));
      if (a_.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      _mm256_storeu_ps(y, v);
    } else {
      const __m256i mask = lanes_below(nv);
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_maskload_ps(a_.dequant_scale + n0, mask));
      v = _mm256_add_ps(v, _mm256_maskload_ps(a_.bias + n0, mask));
      if (a_.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      _mm256_maskstore_ps(y, mask, v);
    }
  }

 private:
  const DynamicArgs& a_;
};

// The dynamic op's activation quantization and range scan, 8 floats at a time.
inline void quantize_activations_avx2(const float* x, int64_t n, float inv_scale, int32_t zp,
                                    uint8_t* q) {
  const __m256 scale = _mm256_set1_ps(inv_scale);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(-zp));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(255 - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // nearbyint: round in the current rounding mode, like the reference.
    __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), scale),
                               _MM_FROUND_CUR_DIRECTION);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256i w = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzp);  // in 0..255
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(w16, w16));
  }
  quantize_activations_reference(x + i, n - i, inv_scale, zp, q + i);
}

inline bool finite_min_max_avx2(const float* x, int64_t n, float* lo, float* hi) {
  if (n < 8) return finite_min_max_reference(x, n, lo, hi);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 mn = _mm256_loadu_ps(x), mx = mn;
  __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  auto scan = [&](__m256 v) {
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
    // |v| < inf is false for infinities and NaN.
    finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_LT_OQ));
  };
  for (int64_t i = 0; i + 8 <= n; i += 8) scan(_mm256_loadu_ps(x + i));
  scan(_mm256_loadu_ps(x + n - 8));  // the last 8, overlapping: min and max do not mind
  alignas(32) float a[8], b[8];
  _mm256_store_ps(a, mn);
  _mm256_store_ps(b, mx);
  float lo_all = a[0], hi_all = b[0];
  for (int i = 1; i < 8; ++i) {
    lo_all = a[i] < lo_all ? a[i] : lo_all;
    hi_all = b[i] > hi_all ? b[i] : hi_all;
  }
  *lo = lo_all;
  *hi = hi_all;
  return _mm256_movemask_ps(finite) == 0xff;
}

// What every x86 plan derives from the matrix's shape, and the row sums that
// remove the activation zero point: the plans inherit it privately.
class TiledPlanShape {
 protected:
  explicit TiledPlanShape(const BcsrMatrix& m)
      : n_(m.N),
        kp_(m.padded_k()),
        quads_(ceil_div(m.padded_k(), 4)),
        tiles_(ceil_div(m.N, kTileRows)),
        column_quads_(m.rb >= 8 && m.cb <= 2),
        row_sum_(row_sums(m)) {
    row_sum_.resize(std::max<int64_t>(tiles_ * kTileRows, m.padded_n()), 0);
  }

  // Output channels of tile t that exist (8 but in the last tile).
  int valid_rows(int64_t t) const {
    return static_cast<int>(std::min<int64_t>(kTileRows, n_ - t * kTileRows));
  }

  // x_zp * row_sum for the 8 channels of tile t.
  __m256i zero_point_term(int64_t t, int32_t x_zp) const {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_sum_.data() + t * kTileRows));
    return _mm256_mullo_epi32(_mm256_set1_epi32(x_zp), s);
  }

  int64_t n_;       // output channels
  int64_t kp_;      // padded input columns (readable in every activation row)
  int64_t quads_;   // ceil(kp_ / 4)
  int64_t tiles_;   // ceil(n_ / 8)
  bool column_quads_;             // rb >= 8 with cb <= 2: the column quads layout
  std::vector<int32_t> row_sum_;  // padded to tiles_ * 8
};

}  // namespace
}  // namespace tsb

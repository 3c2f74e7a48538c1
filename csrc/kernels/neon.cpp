// The aarch64 kernel variants: "neon" (baseline ARMv8 Advanced SIMD) and
// "neondot" (SDOT of the dot-product extension). Both share one packed layout
// and one kernel template; they differ only in the multiply-accumulate step.
//
// Packed layout ("quads"). A quad is 4 input positions of one block row with
// the rb x 4 weights there, stored row by row (row r's 4 bytes at r * 4):
//   cb >= 4: 4 consecutive columns of one block (cb / 4 quads per block),
//            addressed by one x offset, read as one 32-bit word;
//   cb == 2: 2 blocks, addressed by 2 offsets;  cb == 1: 4 blocks, 4 offsets.
// The inner loop consumes 16 weight bytes per accumulator and step:
//   rb >= 4: a step is one quad; vector v holds rows 4v..4v+3, and the x word
//            is broadcast to the 4 lanes;
//   rb <  4: a step is 4 / rb quads in one vector, lane i = quad i * rb / 4,
//            row i % rb; the lanes of each row are summed after the loop.
// Each block row's quads are padded with zero-weight quads to whole steps.
// Tiles are max(rb, 4) output channels, so that the epilogue is 4-wide.
//
// Exactness. x enters as x - 128 = int8(x ^ 0x80), so both variants multiply
// int8 by int8: |product| <= 2^14. "neon" widens each product to int16
// (vmull_s8) and pairs of them into int32 (vpadalq_s16); "neondot" uses SDOT,
// which accumulates 4 products into int32. No partial sum exceeds
// K * 2^14 < 2^31. The epilogue restores
//   sum_k (x - x_zp) * w = sum_k (x - 128) * w + (128 - x_zp) * row_sum
// in wrapping int32 arithmetic, exact because the result fits.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernel_registry.h"
#include "requantize.h"
#include "sparse_core.h"

// The dot-product kernels are compiled for ARMv8.2-A with the dot-product
// extension (what vdotq_s32 requires); everything else keeps the build's
// target, baseline ARMv8-A by default. A build whose -march already has the
// extension needs no attribute. (With a -march that has other extensions but
// not this one, the kernel template cannot be inlined into the entry points:
// still correct, but SDOT is then called out of line.)
#if defined(__ARM_FEATURE_DOTPROD)
#define TSB_TARGET_NEONDOT
#else
#define TSB_TARGET_NEONDOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

namespace tsb {
namespace {

struct QuadLayout {
  int64_t N = 0, rb = 1, cb = 1;
  int64_t block_rows = 0;
  int64_t tile_rows = 4;  // max(rb, 4)
  int64_t num_tiles = 0;
  std::vector<int64_t> quad_ptr;  // block row br owns quads quad_ptr[br] .. quad_ptr[br+1]-1
  std::vector<int32_t> x_offset;  // x offsets per quad: 1 (cb >= 4) or 4 / cb
  std::vector<int8_t> weights;    // rb * 4 per quad
  std::vector<int32_t> row_sum;   // num_tiles * tile_rows, zero beyond N
};

QuadLayout pack_quads(const BcsrMatrix& m) {
  QuadLayout L;
  L.N = m.N;
  L.rb = m.rb;
  L.cb = m.cb;
  L.block_rows = m.block_rows();
  L.tile_rows = std::max<int64_t>(m.rb, 4);
  L.num_tiles = (m.padded_n() + L.tile_rows - 1) / L.tile_rows;
  const int64_t rb = m.rb, cb = m.cb, block_size = rb * cb;
  const int64_t offsets_per_quad = cb >= 4 ? 1 : 4 / cb;
  const int64_t quads_per_step = rb >= 4 ? 1 : 4 / rb;
  L.quad_ptr.assign(L.block_rows + 1, 0);
  for (int64_t br = 0; br < L.block_rows; ++br) {
    const int64_t j_begin = m.row_ptr[br], j_end = m.row_ptr[br + 1];
    int64_t quads = 0;
    if (cb >= 4) {
      for (int64_t j = j_begin; j < j_end; ++j) {
        const int8_t* block = m.values.data() + j * block_size;
        for (int64_t c0 = 0; c0 < cb; c0 += 4, ++quads) {
          L.x_offset.push_back(static_cast<int32_t>(m.col_idx[j] * cb + c0));
          for (int64_t r = 0; r < rb; ++r) {
            L.weights.insert(L.weights.end(), block + r * cb + c0, block + r * cb + c0 + 4);
          }
        }
      }
    } else {
      // Blocks j .. j + offsets_per_quad - 1 form one quad; a missing last
      // block repeats the previous offset with zero weights.
      for (int64_t j = j_begin; j < j_end; j += offsets_per_quad, ++quads) {
        for (int64_t i = 0; i < offsets_per_quad; ++i) {
          const int64_t jj = std::min(j + i, j_end - 1);
          L.x_offset.push_back(static_cast<int32_t>(m.col_idx[jj] * cb));
        }
        for (int64_t r = 0; r < rb; ++r) {
          for (int64_t i = 0; i < offsets_per_quad; ++i) {
            for (int64_t c = 0; c < cb; ++c) {
              L.weights.push_back(j + i < j_end ? m.values[(j + i) * block_size + r * cb + c]
                                                : int8_t{0});
            }
          }
        }
      }
    }
    // Zero-weight quads up to a whole step, reading x where the last quad did.
    for (; quads % quads_per_step != 0; ++quads) {
      const size_t last = L.x_offset.size() - offsets_per_quad;
      for (int64_t i = 0; i < offsets_per_quad; ++i) L.x_offset.push_back(L.x_offset[last + i]);
      L.weights.insert(L.weights.end(), rb * 4, int8_t{0});
    }
    L.quad_ptr[br + 1] = L.quad_ptr[br] + quads;
  }
  L.row_sum = row_sums(m);
  L.row_sum.resize(L.num_tiles * L.tile_rows, 0);
  return L;
}

// Multiply-accumulate of 16 int8 weights with 16 int8 activations into four
// int32 lanes, lane i summing bytes 4i .. 4i+3.

// Baseline: int16 products (vmull_s8), pairs widened into int32 (vpadalq_s16).
// `lo` holds byte pairs 0..7, `hi` pairs 8..15; lanes() adds neighbouring pairs.
struct MacNeon {
  struct Acc {
    int32x4_t lo, hi;
  };
  static Acc zero() { return {vdupq_n_s32(0), vdupq_n_s32(0)}; }
  static void mac(Acc& a, int8x16_t w, int8x16_t x) {
    a.lo = vpadalq_s16(a.lo, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    a.hi = vpadalq_s16(a.hi, vmull_high_s8(w, x));
  }
  static int32x4_t lanes(const Acc& a) { return vpaddq_s32(a.lo, a.hi); }
};

TSB_TARGET_NEONDOT inline int32x4_t sdot(int32x4_t acc, int8x16_t w, int8x16_t x) {
  return vdotq_s32(acc, w, x);
}

// Dot product: one SDOT per 16 bytes. Only inlined into TSB_TARGET_NEONDOT
// entry points (kernel_neondot), which flatten the whole kernel.
struct MacNeonDot {
  using Acc = int32x4_t;
  static Acc zero() { return vdupq_n_s32(0); }
  static void mac(Acc& a, int8x16_t w, int8x16_t x) { a = sdot(a, w, x); }
  static int32x4_t lanes(Acc a) { return a; }
};

// The 4 activation bytes of one quad, minus 128 (as int8, packed in a word).
template <int64_t Cb>
uint32_t load_x_word(const uint8_t* x, const int32_t* off) {
  uint32_t word;
  if constexpr (Cb >= 4) {
    std::memcpy(&word, x + off[0], 4);
  } else if constexpr (Cb == 2) {
    uint16_t a, b;
    std::memcpy(&a, x + off[0], 2);
    std::memcpy(&b, x + off[1], 2);
    word = uint32_t{a} | uint32_t{b} << 16;
  } else {
    word = uint32_t{x[off[0]]} | uint32_t{x[off[1]]} << 8 | uint32_t{x[off[2]]} << 16 |
           uint32_t{x[off[3]]} << 24;
  }
  return word ^ 0x80808080u;
}

// The activation vector of one step, matching the weight vector's lanes.
template <int64_t Rb, int64_t Cb>
int8x16_t load_x_step(const uint8_t* x, const int32_t* off) {
  constexpr int64_t kOffsetsPerQuad = Cb >= 4 ? 1 : 4 / Cb;
  uint32x4_t v;
  if constexpr (Rb >= 4) {
    v = vdupq_n_u32(load_x_word<Cb>(x, off));
  } else if constexpr (Rb == 2) {
    v = vcombine_u32(vdup_n_u32(load_x_word<Cb>(x, off)),
                     vdup_n_u32(load_x_word<Cb>(x, off + kOffsetsPerQuad)));
  } else {
    v = vdupq_n_u32(load_x_word<Cb>(x, off));
    v = vsetq_lane_u32(load_x_word<Cb>(x, off + 1 * kOffsetsPerQuad), v, 1);
    v = vsetq_lane_u32(load_x_word<Cb>(x, off + 2 * kOffsetsPerQuad), v, 2);
    v = vsetq_lane_u32(load_x_word<Cb>(x, off + 3 * kOffsetsPerQuad), v, 3);
  }
  return vreinterpretq_s8_u32(v);
}

// sums[i][row0 + r] = sum_k (x[i][k] - 128) * w[br*rb + r][k] for Mr input rows.
template <class Mac, int64_t Rb, int64_t Cb, int Mr>
void accumulate_block_row(const QuadLayout& L, int64_t br, const uint8_t* const* x,
                          int32_t (*sums)[16], int64_t row0) {
  constexpr int64_t kVectors = Rb >= 4 ? Rb / 4 : 1;
  constexpr int64_t kQuadsPerStep = Rb >= 4 ? 1 : 4 / Rb;
  constexpr int64_t kOffsetsPerQuad = Cb >= 4 ? 1 : 4 / Cb;
  constexpr int64_t kOffsetsPerStep = kQuadsPerStep * kOffsetsPerQuad;
  typename Mac::Acc acc[Mr][kVectors];
  #pragma GCC unroll 4
  for (int i = 0; i < Mr; ++i) {
    for (int64_t v = 0; v < kVectors; ++v) acc[i][v] = Mac::zero();
  }
  const int64_t steps = (L.quad_ptr[br + 1] - L.quad_ptr[br]) / kQuadsPerStep;
  const int32_t* off = L.x_offset.data() + L.quad_ptr[br] * kOffsetsPerQuad;
  const int8_t* w = L.weights.data() + L.quad_ptr[br] * Rb * 4;
  for (int64_t s = 0; s < steps; ++s, off += kOffsetsPerStep, w += 16 * kVectors) {
    int8x16_t wv[kVectors];
    #pragma GCC unroll 4
    for (int64_t v = 0; v < kVectors; ++v) wv[v] = vld1q_s8(w + 16 * v);
    #pragma GCC unroll 4
    for (int i = 0; i < Mr; ++i) {
      const int8x16_t xv = load_x_step<Rb, Cb>(x[i], off);
      #pragma GCC unroll 4
      for (int64_t v = 0; v < kVectors; ++v) Mac::mac(acc[i][v], wv[v], xv);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < Mr; ++i) {
    if constexpr (Rb >= 4) {
      #pragma GCC unroll 4
      for (int64_t v = 0; v < kVectors; ++v) {
        vst1q_s32(sums[i] + row0 + 4 * v, Mac::lanes(acc[i][v]));
      }
    } else if constexpr (Rb == 2) {
      const int32x4_t l = Mac::lanes(acc[i][0]);
      vst1_s32(sums[i] + row0, vadd_s32(vget_low_s32(l), vget_high_s32(l)));
    } else {
      sums[i][row0] = vaddvq_s32(Mac::lanes(acc[i][0]));
    }
  }
}

// sum (x - x_zp) * w from the kernel sum, wrapping like the vector path.
inline int32_t remove_zero_point(int32_t sum, int32_t row_sum, int32_t x_corr) {
  return static_cast<int32_t>(static_cast<uint32_t>(sum) +
                              static_cast<uint32_t>(x_corr) * static_cast<uint32_t>(row_sum));
}

// Outputs n_begin .. n_end-1 of one input row; sums and row_sum start at n_begin.
void write_outputs(const StaticArgs& a, const int32_t* sums, const int32_t* row_sum,
                   int64_t n_begin, int64_t n_end, uint8_t* y) {
  const int32_t x_corr = 128 - a.x_zero_point;
  const int32x4_t corr = vdupq_n_s32(x_corr), y_zp = vdupq_n_s32(a.y_zero_point);
  const float32x4_t lo = vdupq_n_f32(static_cast<float>(a.qmin - a.y_zero_point));
  const float32x4_t hi = vdupq_n_f32(static_cast<float>(a.qmax - a.y_zero_point));
  int64_t n = n_begin;
  for (; n + 4 <= n_end; n += 4) {
    const int32x4_t acc = vmlaq_s32(vld1q_s32(sums + (n - n_begin)),
                                    vld1q_s32(row_sum + (n - n_begin)), corr);
    float32x4_t v = vaddq_f32(vcvtq_f32_s32(acc), vld1q_f32(a.bias_scaled + n));
    v = vmulq_f32(v, vld1q_f32(a.requant_scale + n));
    // Clamped in float like the reference; vcvtnq rounds half to even.
    v = vminq_f32(vmaxq_f32(v, lo), hi);
    const int32x4_t q = vaddq_s32(vcvtnq_s32_f32(v), y_zp);
    const uint8x8_t bytes =
        vmovn_u16(vcombine_u16(vmovn_u32(vreinterpretq_u32_s32(q)), vdup_n_u16(0)));
    const uint32_t packed = vget_lane_u32(vreinterpret_u32_u8(bytes), 0);
    std::memcpy(y + n, &packed, 4);
  }
  for (; n < n_end; ++n) {
    const int32_t acc = remove_zero_point(sums[n - n_begin], row_sum[n - n_begin], x_corr);
    y[n] = requantize_fbgemm_compatible(acc, a.bias_scaled[n], a.requant_scale[n],
                                        a.y_zero_point, a.qmin, a.qmax);
  }
}

// An empty asm the product must pass through, so that no build (whatever its
// -ffp-contract) fuses the following add into an FMA: the contract rounds both.
inline float32x4_t rounded(float32x4_t v) {
  asm("" : "+w"(v));
  return v;
}

void write_outputs(const DynamicArgs& a, const int32_t* sums, const int32_t* row_sum,
                   int64_t n_begin, int64_t n_end, float* y) {
  const int32_t x_corr = 128 - a.x_zero_point;
  const int32x4_t corr = vdupq_n_s32(x_corr);
  const float32x4_t zero = vdupq_n_f32(0.f);
  int64_t n = n_begin;
  for (; n + 4 <= n_end; n += 4) {
    const int32x4_t acc = vmlaq_s32(vld1q_s32(sums + (n - n_begin)),
                                    vld1q_s32(row_sum + (n - n_begin)), corr);
    float32x4_t v = rounded(vmulq_f32(vcvtq_f32_s32(acc), vld1q_f32(a.dequant_scale + n)));
    v = vaddq_f32(v, vld1q_f32(a.bias + n));
    // y > 0 ? y : +0 (also for -0 and NaN), unlike vmaxq_f32.
    if (a.relu) v = vbslq_f32(vcgtq_f32(v, zero), v, zero);
    vst1q_f32(y + n, v);
  }
  for (; n < n_end; ++n) {
    const int32_t acc = remove_zero_point(sums[n - n_begin], row_sum[n - n_begin], x_corr);
    y[n] = dequantize_output(acc, a.dequant_scale[n], a.bias[n], a.relu);
  }
}

// One tile for input rows m .. m+Mr-1.
template <class Mac, int64_t Rb, int64_t Cb, int Mr, class Args>
void run_tile_rows(const QuadLayout& L, const Args& a, int64_t m, int64_t tile) {
  const uint8_t* x[Mr];
  #pragma GCC unroll 4
  for (int i = 0; i < Mr; ++i) x[i] = a.x + (m + i) * a.ldx;
  int32_t sums[Mr][16];
  const int64_t n_begin = tile * L.tile_rows;
  const int64_t br_begin = n_begin / Rb;
  const int64_t br_end = std::min(L.block_rows, br_begin + L.tile_rows / Rb);
  for (int64_t br = br_begin; br < br_end; ++br) {
    accumulate_block_row<Mac, Rb, Cb, Mr>(L, br, x, sums, (br - br_begin) * Rb);
  }
  const int64_t n_end = std::min(L.N, n_begin + L.tile_rows);
  for (int i = 0; i < Mr; ++i) {
    write_outputs(a, sums[i], L.row_sum.data() + n_begin, n_begin, n_end,
                  a.y + (m + i) * a.ldy);
  }
}

// Tiles outer (a tile's weights stay in cache), input rows in groups that
// share each weight load; the group size keeps accumulators in registers.
template <class Mac, int64_t Rb, int64_t Cb, class Args>
void run_quad_kernel(const QuadLayout& L, const Args& a, int64_t m_begin, int64_t m_end,
                     int64_t t_begin, int64_t t_end) {
  constexpr int64_t kAccRegs =
      (Rb >= 4 ? Rb / 4 : 1) * static_cast<int64_t>(sizeof(typename Mac::Acc) / 16);
  constexpr int kMr = kAccRegs > 4 ? 2 : 4;
  for (int64_t t = t_begin; t < t_end; ++t) {
    int64_t m = m_begin;
    for (; m + kMr <= m_end; m += kMr) run_tile_rows<Mac, Rb, Cb, kMr>(L, a, m, t);
    for (; m < m_end; ++m) run_tile_rows<Mac, Rb, Cb, 1>(L, a, m, t);
  }
}

// Entry points, one instantiation per block shape and mode: kernel_neon<1, 4>
// is the baseline 1x4 kernel, kernel_neondot<8, 1> the dot-product 8x1 one.
template <int64_t Rb, int64_t Cb, class Args>
__attribute__((flatten)) void kernel_neon(const QuadLayout& L, const Args& a, int64_t m_begin,
                                          int64_t m_end, int64_t t_begin, int64_t t_end) {
  run_quad_kernel<MacNeon, Rb, Cb>(L, a, m_begin, m_end, t_begin, t_end);
}

template <int64_t Rb, int64_t Cb, class Args>
TSB_TARGET_NEONDOT __attribute__((flatten)) void kernel_neondot(const QuadLayout& L,
                                                                const Args& a, int64_t m_begin,
                                                                int64_t m_end, int64_t t_begin,
                                                                int64_t t_end) {
  run_quad_kernel<MacNeonDot, Rb, Cb>(L, a, m_begin, m_end, t_begin, t_end);
}

struct Kernels {
  void (*run_static)(const QuadLayout&, const StaticArgs&, int64_t, int64_t, int64_t, int64_t);
  void (*run_dynamic)(const QuadLayout&, const DynamicArgs&, int64_t, int64_t, int64_t,
                      int64_t);
};

template <bool kDot, int64_t Rb, int64_t Cb>
Kernels kernels_for_shape() {
  if constexpr (kDot) {
    return {kernel_neondot<Rb, Cb, StaticArgs>, kernel_neondot<Rb, Cb, DynamicArgs>};
  } else {
    return {kernel_neon<Rb, Cb, StaticArgs>, kernel_neon<Rb, Cb, DynamicArgs>};
  }
}

template <bool kDot, int64_t Rb>
Kernels kernels_for_rb(int64_t cb) {
  switch (cb) {
    case 1: return kernels_for_shape<kDot, Rb, 1>();
    case 2: return kernels_for_shape<kDot, Rb, 2>();
    case 4: return kernels_for_shape<kDot, Rb, 4>();
    case 8: return kernels_for_shape<kDot, Rb, 8>();
    default: return kernels_for_shape<kDot, Rb, 16>();
  }
}

template <bool kDot>
Kernels kernels_for(int64_t rb, int64_t cb) {
  switch (rb) {
    case 1: return kernels_for_rb<kDot, 1>(cb);
    case 2: return kernels_for_rb<kDot, 2>(cb);
    case 4: return kernels_for_rb<kDot, 4>(cb);
    case 8: return kernels_for_rb<kDot, 8>(cb);
    default: return kernels_for_rb<kDot, 16>(cb);
  }
}

// q = clamp(nearbyint(x * inv_scale) + zp, 0, 255); vrndnq_f32 rounds half to
// even like nearbyint in the default rounding mode.
void quantize_activations_neon(const float* x, int64_t n, float inv_scale, int32_t zp,
                               uint8_t* q) {
  const float32x4_t scale = vdupq_n_f32(inv_scale);
  const float32x4_t lo = vdupq_n_f32(static_cast<float>(-zp));
  const float32x4_t hi = vdupq_n_f32(static_cast<float>(255 - zp));
  const int32x4_t vzp = vdupq_n_s32(zp);
  auto quantize4 = [&](const float* p) {
    float32x4_t v = vrndnq_f32(vmulq_f32(vld1q_f32(p), scale));
    v = vminq_f32(vmaxq_f32(v, lo), hi);
    return vmovn_u32(vreinterpretq_u32_s32(vaddq_s32(vcvtq_s32_f32(v), vzp)));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint8x8_t a = vmovn_u16(vcombine_u16(quantize4(x + i), quantize4(x + i + 4)));
    const uint8x8_t b = vmovn_u16(vcombine_u16(quantize4(x + i + 8), quantize4(x + i + 12)));
    vst1q_u8(q + i, vcombine_u8(a, b));
  }
  quantize_activations_reference(x + i, n - i, inv_scale, zp, q + i);
}

template <bool kDot>
class NeonPlan final : public KernelPlan {
 public:
  explicit NeonPlan(const BcsrMatrix& m)
      : layout_(pack_quads(m)), kernels_(kernels_for<kDot>(m.rb, m.cb)) {}

  const char* name() const override { return kDot ? "neondot" : "neon"; }
  int64_t num_tiles() const override { return layout_.num_tiles; }
  size_t packed_bytes() const override {
    return layout_.quad_ptr.size() * sizeof(int64_t) +
           layout_.x_offset.size() * sizeof(int32_t) + layout_.weights.size() +
           layout_.row_sum.size() * sizeof(int32_t);
  }
  void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                  int64_t t_end) const override {
    kernels_.run_static(layout_, a, m_begin, m_end, t_begin, t_end);
  }
  void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                   int64_t t_end) const override {
    kernels_.run_dynamic(layout_, a, m_begin, m_end, t_begin, t_end);
  }
  void quantize_activations(const float* x, int64_t n, float inv_scale, int32_t zp,
                            uint8_t* q) const override {
    quantize_activations_neon(x, n, inv_scale, zp, q);
  }

 private:
  const QuadLayout layout_;
  const Kernels kernels_;
};

}  // namespace

std::unique_ptr<KernelPlan> make_neon_plan(const BcsrMatrix& m) {
  return std::make_unique<NeonPlan<false>>(m);
}

std::unique_ptr<KernelPlan> make_neondot_plan(const BcsrMatrix& m) {
  return std::make_unique<NeonPlan<true>>(m);
}

}  // namespace tsb

#endif  // defined(__aarch64__)

// The x86 AVX-512 VNNI kernel variant ("avx512vnni": AVX-512 F, BW, VL and VNNI).
//
// Exactness: every product is formed by vpdpbusd, which multiplies unsigned
// activation bytes (0..255) by signed weight bytes, adds the four products of
// each 32-bit lane and accumulates without saturation (the non-"s" form), so
// every partial sum is an exact int32, as in the reference. The zero point is
// removed afterwards: acc = sum x * w - x_zp * row_sum (wrapping int32).
//
// Two packed layouts (x86_layouts.h):
//
//  * Quad slots (every block shape except rb >= 8 with cb <= 2): tiles of 16
//    output channels, one per 32-bit lane; each step holds one piece per
//    channel, all in one 128-column window (windows start every 64
//    columns), so a two-table permute (vpermt2d) of the window's 128
//    activation bytes gives the step's 16 activation words in one
//    instruction. Up to 8 activation rows share each step's weight and index
//    loads; 1-4 rows load each step's tables from the rows, 5-8 keep a
//    window's tables in registers while its steps run. Batches of 16 rows or
//    more with blocks 4, 8 or 16 columns wide run on the canonical matrix
//    (bcsr_batch).
//  * Column quads (rb in {8, 16}, cb in {1, 2}): tiles of 8 output channels;
//    four input columns c0..c3 and 32 int8 weights per entry, channel i's
//    w[i][c0..c3] in bytes 4i..4i+3, one vpdpbusd lane per channel. One or
//    two activation rows build each entry's word from 4 byte loads and
//    broadcast it to the 8 channels; batches of 16 or 32 rows first re-lay
//    the activations as 16 bytes per column and group of 16 rows (row i's
//    byte at i) and multiply each entry with every group's interleaved words.
//    Output sums are transposed to 8 channels of one row.
//
// The epilogues (x86_common.h and the 16-row ones below) repeat the
// reference's float operations in its order.
//
// The ISA is enabled for this file only (TSB_TARGET_BEGIN below); it runs only
// after dispatch selected the variant. FMA stays disabled, as in avx2_plan.h.
#include <utility>

#include "kernel_registry.h"
#include "sparse_core.h"

#if defined(__x86_64__) || defined(_M_X64)

#include "x86_layouts.h"
#include "x86_target.h"

#if defined(TSB_X86_EMULATION)
// Test builds only (test/native/run.sh --x86-emulated): AVX2 code, with
// the AVX-512 intrinsics emulated by the header this macro names.
TSB_TARGET_BEGIN("avx2")
#else
TSB_TARGET_BEGIN("avx2,avx512f,avx512bw,avx512vl,avx512vnni")
#endif
// GCC 12's AVX-512 intrinsics start from self-initialized "undefined"
// vectors, which -Wmaybe-uninitialized and -Wuninitialized report at inlined
// uses.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "x86_common.h"
#if defined(TSB_X86_EMULATION)
#include TSB_X86_EMULATION
#endif

namespace tsb {
namespace {

// Activation rows of one pass of the quad slots kernels: at most this many
// rows are copied to the per-thread scratch (zero-padded past the last window)
// and run against each tile's steps while those are in cache.
constexpr int64_t kSlotChunkRows = 64;

// Up to this many rows, the quad slots kernel loads each step's tables from
// the rows (see slots_tile).
constexpr int kSlotStreamRows = 4;

// From this many rows on, blocks at least 4 columns wide run the batch
// kernel on the canonical matrix (BcsrBatch below) instead of the quad slots.
constexpr int64_t kBatchMinRows = 16;

// Steps (quad slots) or entries (column quads) ahead of the weight stream
// that the multi-row kernels prefetch: 8 KB of quad slot weights, far enough
// to cover DRAM latency at their pace.
constexpr int64_t kPrefetchSteps = 128;

// A hint to load the cache line `bytes` past p, which may lie past the end of
// p's array (a prefetch never faults); integer arithmetic, so that no
// out-of-range pointer is formed.
inline void prefetch_ahead(const void* p, int64_t bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)),
               _MM_HINT_T0);
}

// acc + the 4-byte dot products of unsigned u8 and signed s8, per 32-bit lane
// (_mm512_dpbusd_epi32). Written as asm with the accumulator tied to the
// output: with the intrinsic, GCC 12 copies loop-carried accumulators through
// another register around every vpdpbusd, which puts the copies on the
// dependency chain.
inline __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
#if defined(TSB_X86_EMULATION)
  return _mm512_dpbusd_epi32(acc, u8, s8);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
#endif
}

inline __m256i dpbusd256(__m256i acc, __m256i u8, __m256i s8) {
#if defined(TSB_X86_EMULATION)
  return _mm256_dpbusd_epi32(acc, u8, s8);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
#endif
}

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// 32 activations of one row; bytes at or past `len` read as 0.
inline __m256i load_row32(const uint8_t* src, int64_t len) {
  if (len >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  return _mm256_maskz_loadu_epi8(static_cast<__mmask32>((uint64_t{1} << len) - 1), src);
}

// 16 activations of one row; bytes at or past `len` read as 0.
inline __m128i load_row16(const uint8_t* src, int64_t len) {
  if (len >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  return _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << len) - 1), src);
}

// In place: 16x16 transpose of bytes (byte j of r[i] -> byte i of r[j]).
inline void transpose_16x16_epi8(__m128i r[16]) {
  __m128i a[16], b[16];
  // a[i], a[i + 8]: 16-bit element j = rows 2i, 2i + 1 of column j, 8 + j.
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
    a[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
  }
  // b[8h + 4s + i]: 32-bit element j = rows 4i .. 4i + 3 of column 8h + 4s + j.
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 4; ++i) {
      b[8 * h + i] = _mm_unpacklo_epi16(a[8 * h + 2 * i], a[8 * h + 2 * i + 1]);
      b[8 * h + 4 + i] = _mm_unpackhi_epi16(a[8 * h + 2 * i], a[8 * h + 2 * i + 1]);
    }
  }
  // a[4q + i], a[4q + 2 + i]: 64-bit element j = rows 8i .. 8i + 7 of column
  // 4q + j, 4q + 2 + j.
  for (int q = 0; q < 4; ++q) {
    for (int i = 0; i < 2; ++i) {
      a[4 * q + i] = _mm_unpacklo_epi32(b[4 * q + 2 * i], b[4 * q + 2 * i + 1]);
      a[4 * q + 2 + i] = _mm_unpackhi_epi32(b[4 * q + 2 * i], b[4 * q + 2 * i + 1]);
    }
  }
  for (int q = 0; q < 4; ++q) {
    r[4 * q] = _mm_unpacklo_epi64(a[4 * q], a[4 * q + 1]);
    r[4 * q + 1] = _mm_unpackhi_epi64(a[4 * q], a[4 * q + 1]);
    r[4 * q + 2] = _mm_unpacklo_epi64(a[4 * q + 2], a[4 * q + 3]);
    r[4 * q + 3] = _mm_unpackhi_epi64(a[4 * q + 2], a[4 * q + 3]);
  }
}

// The epilogues of the batch kernels: 16 activation rows of 8 output
// channels at once, one vector per channel, with per value the same float
// operations in the same order as the 8-channel epilogues of x86_common.h
// (which the GEMV paths use).
class StaticEpilogue16 : public StaticEpilogue {
 public:
  explicit StaticEpilogue16(const StaticArgs& a)
      : StaticEpilogue(a),
        a_(a),
        lo_(_mm512_set1_ps(static_cast<float>(a.qmin - a.y_zero_point))),
        hi_(_mm512_set1_ps(static_cast<float>(a.qmax - a.y_zero_point))),
        y_zp_(_mm512_set1_epi32(a.y_zero_point)) {}

  // acc[r]: channel n0 + r of rows m0 .. m0 + 15, zero point removed. Rows
  // below `rows` and channels below nv are stored.
  void store16(int64_t m0, int rows, int64_t n0, int nv, const __m512i acc[8]) const {
    __m128i c[8];
    for (int r = 0; r < 8; ++r) {
      if (r >= nv) {
        c[r] = _mm_setzero_si128();
        continue;
      }
      __m512 v = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_set1_ps(a_.bias_scaled[n0 + r])),
                               _mm512_set1_ps(a_.requant_scale[n0 + r]));
      v = _mm512_min_ps(_mm512_max_ps(v, lo_), hi_);
      // In [qmin, qmax] after the clamp, so the narrowing never saturates.
      c[r] = _mm512_cvtusepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), y_zp_));
    }
    // 8 channels x 16 rows of bytes -> 16 rows x 8 channels: d[i] holds
    // rows 2i and 2i + 1 in its low and high 8 bytes.
    __m128i a[8], b[8], d[8];
    for (int i = 0; i < 4; ++i) {
      a[2 * i] = _mm_unpacklo_epi8(c[2 * i], c[2 * i + 1]);
      a[2 * i + 1] = _mm_unpackhi_epi8(c[2 * i], c[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      b[4 * i] = _mm_unpacklo_epi16(a[4 * i], a[4 * i + 2]);
      b[4 * i + 1] = _mm_unpackhi_epi16(a[4 * i], a[4 * i + 2]);
      b[4 * i + 2] = _mm_unpacklo_epi16(a[4 * i + 1], a[4 * i + 3]);
      b[4 * i + 3] = _mm_unpackhi_epi16(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int i = 0; i < 4; ++i) {
      d[2 * i] = _mm_unpacklo_epi32(b[i], b[4 + i]);
      d[2 * i + 1] = _mm_unpackhi_epi32(b[i], b[4 + i]);
    }
    const __mmask16 k = static_cast<__mmask16>((1u << nv) - 1);
    for (int i = 0; i < rows; ++i) {
      const __m128i v = i % 2 ? _mm_unpackhi_epi64(d[i / 2], d[i / 2]) : d[i / 2];
      uint8_t* y = a_.y + (m0 + i) * a_.ldy + n0;
      if (nv == 8) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(y), v);
      } else {
        _mm_mask_storeu_epi8(y, k, v);
      }
    }
  }

 private:
  const StaticArgs& a_;
  __m512 lo_, hi_;
  __m512i y_zp_;
};

class DynamicEpilogue16 : public DynamicEpilogue {
 public:
  explicit DynamicEpilogue16(const DynamicArgs& a) : DynamicEpilogue(a), a_(a) {}

  void store16(int64_t m0, int rows, int64_t n0, int nv, const __m512i acc[8]) const {
    __m256i lo[8], hi[8];
    for (int r = 0; r < 8; ++r) {
      __m512 v = _mm512_setzero_ps();
      if (r < nv) {
        v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_set1_ps(a_.dequant_scale[n0 + r]));
        v = _mm512_add_ps(v, _mm512_set1_ps(a_.bias[n0 + r]));
        if (a_.relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
      }
      lo[r] = _mm512_castsi512_si256(_mm512_castps_si512(v));
      hi[r] = _mm512_extracti64x4_epi64(_mm512_castps_si512(v), 1);
    }
    transpose_8x8_epi32(lo);  // lo[i]: row i, lane = channel
    transpose_8x8_epi32(hi);  // hi[i]: row 8 + i
    const __mmask8 k = static_cast<__mmask8>((1u << nv) - 1);
    for (int i = 0; i < rows; ++i) {
      float* y = a_.y + (m0 + i) * a_.ldy + n0;
      const __m256 v = _mm256_castsi256_ps(i < 8 ? lo[i] : hi[i - 8]);
      if (nv == 8) {
        _mm256_storeu_ps(y, v);
      } else {
        _mm256_mask_storeu_ps(y, k, v);
      }
    }
  }

 private:
  const DynamicArgs& a_;
};

class Avx512VnniPlan final : public KernelPlan, private TiledPlanShape {
 public:
  explicit Avx512VnniPlan(const BcsrMatrix& m) : TiledPlanShape(m) {
    if (column_quads_) {
      cq_ = ColumnQuads(m, tiles_, /*no_min_weight=*/false);
    } else {
      s_ = QuadSlots(m);
      // Blocks of 4, 8 or 16 columns are whole pieces of the canonical matrix,
      // which batches read directly (the plan refers to m, see make_plan).
      if (m.cb >= 4 && m.num_blocks() > 0) bcsr_ = &m;
      // The slot epilogues read the row sums of whole 16-channel tiles.
      row_sum_.resize(std::max<size_t>(row_sum_.size(), static_cast<size_t>(s_.tiles * QuadSlots::kSlots)), 0);
    }
  }

  const char* name() const override { return "avx512vnni"; }
  // Column quads split work into tiles of 8 channels, quad slots into tiles
  // of 16.
  int64_t num_tiles() const override { return column_quads_ ? tiles_ : s_.tiles; }
  // Entries or steps, plus one per tile for its epilogue.
  int64_t work_before(int64_t t) const override {
    return t + (column_quads_ ? int64_t{cq_.tile_start[t]} : s_.tile_start(t));
  }
  size_t packed_bytes() const override {
    return s_.bytes() + cq_.bytes() + row_sum_.size() * sizeof(int32_t);
  }

  void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                  int64_t t_end) const override {
    run(StaticEpilogue16(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                   int64_t t_end) const override {
    run(DynamicEpilogue16(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  // 16 floats per step, the same operations per value as the reference.
  void quantize_activations(const float* x, int64_t n, float inv_scale, int32_t zp,
                            uint8_t* q) const override {
    const __m512 scale = _mm512_set1_ps(inv_scale);
    const __m512 lo = _mm512_set1_ps(static_cast<float>(-zp));
    const __m512 hi = _mm512_set1_ps(static_cast<float>(255 - zp));
    const __m512i vzp = _mm512_set1_epi32(zp);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      // nearbyint: round in the current rounding mode, like the reference.
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), scale), _MM_FROUND_CUR_DIRECTION);
      v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
      const __m512i w = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);  // in 0..255
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtusepi32_epi8(w));
    }
    quantize_activations_reference(x + i, n - i, inv_scale, zp, q + i);
  }

  bool finite_min_max(const float* x, int64_t n, float* lo, float* hi) const override {
    if (n < 32) return finite_min_max_avx2(x, n, lo, hi);
    const __m512 inf = _mm512_set1_ps(INFINITY);
    // Two independent running minima and maxima halve the dependency chains.
    __m512 mn0 = _mm512_loadu_ps(x), mx0 = mn0, mn1 = mn0, mx1 = mn0;
    __mmask16 finite = 0xffff;
    auto scan = [&](__m512 v, __m512& mn, __m512& mx) {
      mn = _mm512_min_ps(mn, v);
      mx = _mm512_max_ps(mx, v);
      // |v| < inf is false for infinities and NaN.
      finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_LT_OQ);
    };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      scan(_mm512_loadu_ps(x + i), mn0, mx0);
      scan(_mm512_loadu_ps(x + i + 16), mn1, mx1);
    }
    for (; i + 16 <= n; i += 16) scan(_mm512_loadu_ps(x + i), mn0, mx0);
    scan(_mm512_loadu_ps(x + n - 16), mn1, mx1);  // the last 16, overlapping: min and max do not mind
    *lo = _mm512_reduce_min_ps(_mm512_min_ps(mn0, mn1));
    *hi = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1));
    return finite == 0xffff;
  }

 private:
  template <class Epilogue>
  void run(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
           int64_t m_end, int64_t t_begin, int64_t t_end) const {
    if (m_begin >= m_end || t_begin >= t_end) return;
    if (!column_quads_) {
      int64_t m = m_begin;
      while (bcsr_ != nullptr && m_end - m >= kBatchMinRows) {
        const int groups = m_end - m >= 32 ? 2 : 1;
        Vec64* buf = thread_scratch<Vec64>(static_cast<size_t>(quads_ * groups));
        pack_quads(x + m * ldx, ldx, 16 * groups, groups, buf);
        if (groups == 2) {
          bcsr_batch<2>(epi, buf, m, 32, x_zp, t_begin, t_end);
        } else {
          bcsr_batch<1>(epi, buf, m, 16, x_zp, t_begin, t_end);
        }
        m += 16 * groups;
      }
      run_slots(epi, x, ldx, x_zp, m, m_end, t_begin, t_end);
      return;
    }
    for (int64_t m = m_begin; m < m_end;) {
      const int64_t left = m_end - m;
      if (left == 1) {
        column_quads_gemv(epi, x + m * ldx, m, x_zp, t_begin, t_end);
        ++m;
        continue;
      }
      if (left <= 8) {  // 2 to 8 rows, sharing each entry's loads
        const int rows = static_cast<int>(left);
        if (rows > 4) {
          column_quads_rows<8>(epi, x, ldx, m, rows, x_zp, t_begin, t_end);
        } else if (rows > 2) {
          column_quads_rows<4>(epi, x, ldx, m, rows, x_zp, t_begin, t_end);
        } else {
          column_quads_rows<2>(epi, x, ldx, m, rows, x_zp, t_begin, t_end);
        }
        m += rows;
        continue;
      }
      const int groups = left > 16 ? 2 : 1;
      const int rows = static_cast<int>(std::min<int64_t>(left, 16 * groups));
      __m128i* buf = thread_scratch<__m128i>(static_cast<size_t>(kp_ * groups));
      pack_columns(x + m * ldx, ldx, rows, groups, buf);
      if (groups == 2) {
        column_quads_batch<2>(epi, buf, m, rows, x_zp, t_begin, t_end);
      } else {
        column_quads_batch<1>(epi, buf, m, rows, x_zp, t_begin, t_end);
      }
      m += rows;
    }
  }

  // Epilogue of one column quads tile of a batch: part[g][r][i] is the sum of
  // output channel 8t + r for activation row m0 + 16g + i.
  template <int G, class Epilogue>
  void store_batch_tile(const Epilogue& epi, const int32_t (&part)[G][8][16], int64_t m0,
                        int rows, int64_t t, int32_t x_zp) const {
    __m512i zp_term[8];
    for (int r = 0; r < 8; ++r) {  // x_zp * row_sum, wrapping like the reference
      zp_term[r] = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(x_zp) *
                                                          static_cast<uint32_t>(row_sum_[t * kTileRows + r])));
    }
    for (int g = 0; g < G && 16 * g < rows; ++g) {
      __m512i a[8];
      for (int r = 0; r < 8; ++r) a[r] = _mm512_sub_epi32(_mm512_load_si512(part[g][r]), zp_term[r]);
      epi.store16(m0 + 16 * g, std::min(16, rows - 16 * g), t * kTileRows, valid_rows(t), a);
    }
  }

  // ---- Quad slots layout ----

  // Bytes between the starts of consecutive windows of a row.
  static constexpr int64_t kStrideBytes = QuadSlots::kWindowStride * 4;

  // Rows [m_begin, m_end) for slot tiles [t_begin, t_end): up to
  // kSlotChunkRows rows are copied to the scratch, zero-padded past the last
  // window, then each tile's steps run for them in groups of up to 8 rows.
  template <class Epilogue>
  void run_slots(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
                 int64_t m_end, int64_t t_begin, int64_t t_end) const {
    const int64_t row_bytes = s_.row_bytes();
    for (int64_t m = m_begin; m < m_end; m += kSlotChunkRows) {
      const int64_t rows = std::min(kSlotChunkRows, m_end - m);
      uint8_t* xs = thread_scratch<Vec64>(static_cast<size_t>(rows * row_bytes / 64))->b;
      for (int64_t i = 0; i < rows; ++i) {
        std::memcpy(xs + i * row_bytes, x + (m + i) * ldx, static_cast<size_t>(kp_));
        std::memset(xs + i * row_bytes + kp_, 0, static_cast<size_t>(row_bytes - kp_));
      }
      for (int64_t t = t_begin; t < t_end; ++t) {
        for (int64_t g = 0; g < rows; g += 8) {
          const uint8_t* xg = xs + g * row_bytes;
          switch (std::min<int64_t>(rows - g, 8)) {
            case 8: slots_tile<8>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 7: slots_tile<7>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 6: slots_tile<6>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 5: slots_tile<5>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 4: slots_tile<4>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 3: slots_tile<3>(epi, xg, row_bytes, m + g, t, x_zp); break;
            case 2: slots_tile<2>(epi, xg, row_bytes, m + g, t, x_zp); break;
            default: slots_tile<1>(epi, xg, row_bytes, m + g, t, x_zp); break;
          }
        }
      }
    }
  }

  // Several rows take long enough per step that the hardware prefetchers fall
  // behind a weight stream from DRAM (layers whose packed weights leave the
  // caches, or several layers run in turn): their kernels prefetch the steps
  // kPrefetchSteps ahead (one step streams alone and needs none).
  void prefetch_steps(int64_t s) const {
    constexpr int64_t kWeightBytes = sizeof(QuadSlots::Weights), kIndexBytes = sizeof(QuadSlots::Indices);
    prefetch_ahead(s_.weights.data() + s, kPrefetchSteps * kWeightBytes);
    // 4 steps' indices per cache line.
    if ((s & 3) == 0) prefetch_ahead(s_.indices.data() + s, kPrefetchSteps * kIndexBytes);
  }

  // Sums of the R rows xs (row_bytes apart; output rows m0 ..) for the 16
  // channels of slot tile t. Each step multiplies its 16 weight words with the
  // activation words of its 16 quads, which one two-table permute picks from
  // the step's 128-column window of a row.
  //
  // Up to kSlotStreamRows rows stream the tile's steps and load each step's
  // tables, 128 bytes of each row: the loop runs through the tile without a
  // branch per window. More rows keep the tables of a window in registers
  // while its steps run, which saves 2R loads per step for one branch per run
  // (whose trip count varies, so it is often mispredicted). Enough
  // accumulator sets keep 4 or more vpdpbusd chains in flight (R >= 5 rows
  // have R of them).
  template <int R, class Epilogue>
  TSB_KERNEL_NOINLINE void slots_tile(const Epilogue& epi, const uint8_t* xs, int64_t row_bytes,
                                      int64_t m0, int64_t t, int32_t x_zp) const {
    constexpr bool kStream = R <= kSlotStreamRows;
    constexpr int U = R <= 2 ? 4 : R <= kSlotStreamRows ? 2 : 1;
    const QuadSlots::Weights* weights = s_.weights.data();
    const QuadSlots::Indices* indices = s_.indices.data();
    auto load_indices = [&](int64_t s) {
      return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(indices + s)));
    };
    __m512i acc[U][R];
    for (int u = 0; u < U; ++u) {
      for (int i = 0; i < R; ++i) acc[u][i] = _mm512_setzero_si512();
    }
    if constexpr (kStream) {
      const uint16_t* window = s_.step_window.data();
      auto step = [&](__m512i (&a)[R], int64_t s) {
        const __m512i idx = load_indices(s);
        const __m512i w = _mm512_load_si512(weights + s);
        if constexpr (R > 1) prefetch_steps(s);
        const uint8_t* table = xs + int64_t{window[s]} * kStrideBytes;
        for (int i = 0; i < R; ++i) {
          const __m512i xw = _mm512_permutex2var_epi32(_mm512_load_si512(table + i * row_bytes), idx,
                                                       _mm512_load_si512(table + i * row_bytes + 64));
          a[i] = dpbusd(a[i], xw, w);
        }
      };
      int64_t s = s_.tile_start(t);
      const int64_t end = s_.tile_start(t + 1);
      for (; s + U <= end; s += U) {
        for (int u = 0; u < U; ++u) step(acc[u], s + u);
      }
      for (; s < end; ++s) step(acc[0], s);
    } else {
      const uint16_t* run_window = s_.run_window.data();
      const int64_t* run_start = s_.run_start.data();
      const int64_t run_end = s_.tile_run[t + 1];
      int64_t run = s_.tile_run[t];
      // Each run's window is read during the run before it, so that its
      // tables' addresses are known when the previous run's last step retires.
      int64_t next_window = run_window[run];
      for (; run < run_end; ++run) {
        const int64_t w = next_window, s0 = run_start[run], s1 = run_start[run + 1];
        next_window = run_window[run + 1];
        __m512i lo[R], hi[R];
        for (int i = 0; i < R; ++i) {
          lo[i] = _mm512_load_si512(xs + i * row_bytes + w * kStrideBytes);
          hi[i] = _mm512_load_si512(xs + i * row_bytes + w * kStrideBytes + 64);
        }
        for (int64_t s = s0; s < s1; ++s) {
          const __m512i idx = load_indices(s);
          const __m512i w = _mm512_load_si512(weights + s);
          prefetch_steps(s);
          for (int i = 0; i < R; ++i) {
            acc[0][i] = dpbusd(acc[0][i], _mm512_permutex2var_epi32(lo[i], idx, hi[i]), w);
          }
        }
      }
    }
    for (int i = 0; i < R; ++i) {
      __m512i sum = acc[0][i];
      for (int u = 1; u < U; ++u) sum = _mm512_add_epi32(sum, acc[u][i]);
      store_slot_tile(epi, m0 + i, t, sum, x_zp);
    }
  }

  // ---- Batches on the canonical matrix (blocks with cb >= 4) ----

  // Batch buffer: for quad q and group g of 16 activation rows,
  // buf[q * groups + g] holds x[16g + i][4q .. 4q + 3] in lane i. Rows past
  // `rows` and columns past padded_k() are zero.
  void pack_quads(const uint8_t* x, int64_t ldx, int rows, int groups, Vec64* buf) const {
    for (int g = 0; g < groups; ++g) {
      for (int h = 0; h < 2; ++h) {
        const int base = 16 * g + 8 * h;
        const int valid = std::max(0, std::min(8, rows - base));
        for (int64_t k = 0; k < kp_; k += 32) {
          const int64_t len = std::min<int64_t>(32, kp_ - k);
          __m256i r[8];
          for (int i = 0; i < 8; ++i) {
            r[i] = i < valid ? load_row32(x + (base + i) * ldx + k, len) : _mm256_setzero_si256();
          }
          transpose_8x8_epi32(r);  // r[j]: quad k / 4 + j, lane = row
          const int64_t nq = ceil_div(len, 4);
          for (int64_t j = 0; j < nq; ++j) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(buf[(k / 4 + j) * groups + g].b + 32 * h), r[j]);
          }
        }
      }
    }
  }

  template <int G, class Epilogue>
  void bcsr_batch(const Epilogue& epi, const Vec64* buf, int64_t m0, int rows, int32_t x_zp,
                  int64_t t_begin, int64_t t_end) const {
    // 1x4, 1x8 and 1x16 with each channel's blocks contiguous; the other
    // row blocks with the block stride.
    const bool rb1 = bcsr_->rb == 1;
    switch (bcsr_->cb) {
      case 4:
        rb1 ? bcsr_batch<G, 1, true>(epi, buf, m0, rows, x_zp, t_begin, t_end)
            : bcsr_batch<G, 1, false>(epi, buf, m0, rows, x_zp, t_begin, t_end);
        break;
      case 8:
        rb1 ? bcsr_batch<G, 2, true>(epi, buf, m0, rows, x_zp, t_begin, t_end)
            : bcsr_batch<G, 2, false>(epi, buf, m0, rows, x_zp, t_begin, t_end);
        break;
      default:
        rb1 ? bcsr_batch<G, 4, true>(epi, buf, m0, rows, x_zp, t_begin, t_end)
            : bcsr_batch<G, 4, false>(epi, buf, m0, rows, x_zp, t_begin, t_end);
        break;
    }
  }

  // Rows [m0, m0 + rows) for 16 * G activation rows and the channels of slot
  // tiles [t_begin, t_end), in 8-channel halves. Channel n's pieces are the
  // CB4 = cb / 4 quads of each block of its block row: quad col_idx[j] * CB4 + i,
  // weights at values[j * rb * cb + (n % rb) * cb + 4i]. Each piece's weight word
  // is broadcast once and multiplied with G activation vectors; four
  // accumulator sets hide the latency of vpdpbusd.
  template <int G, int CB4, bool kRb1, class Epilogue>
  TSB_KERNEL_NOINLINE void bcsr_batch(const Epilogue& epi, const Vec64* buf, int64_t m0, int rows,
                                      int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    constexpr int64_t kBlocksPerStep = 4 / CB4;
    const int32_t* const row_ptr = bcsr_->row_ptr.data();
    const int32_t* const col = bcsr_->col_idx.data();
    const int8_t* const values = bcsr_->values.data();
    const int64_t rb = kRb1 ? 1 : bcsr_->rb, row_bytes = 4 * CB4, block_bytes = kRb1 ? row_bytes : rb * row_bytes;
    // rb is a power of two: channel n is row n & (rb - 1) of block row n >> rb_shift.
    int rb_shift = 0;
    while ((int64_t{1} << rb_shift) < rb) ++rb_shift;
    const int64_t n_end = n_, t8_end = std::min(2 * t_end, tiles_);
    alignas(64) int32_t part[G][8][16];
    for (int64_t t8 = 2 * t_begin; t8 < t8_end; ++t8) {
      for (int r = 0; r < 8; ++r) {
        __m512i a0[G], a1[G], a2[G], a3[G];
        for (int g = 0; g < G; ++g) a0[g] = a1[g] = a2[g] = a3[g] = _mm512_setzero_si512();
        const int64_t n = t8 * kTileRows + r;
        if (n < n_end) {
          const int64_t br = n >> rb_shift;
          const int64_t j0 = row_ptr[br], j1 = row_ptr[br + 1];
          // Block j's column and the channel's cb weights in it.
          const int32_t* c = col + j0;
          const int8_t* v = values + j0 * block_bytes + (n & (rb - 1)) * row_bytes;
          // Piece i of the block at (c, v); keep = 0 multiplies it by zero weights.
          auto piece = [&](__m512i (&acc)[G], const int32_t* cb, const int8_t* vb, int i, int32_t keep) {
            const __m512i wb = _mm512_set1_epi32(load_i32(vb + 4 * i) & keep);
            const Vec64* xq = buf + (int64_t{*cb} * CB4 + i) * G;
            for (int g = 0; g < G; ++g) acc[g] = dpbusd(acc[g], _mm512_load_si512(xq + g), wb);
          };
          // Four pieces per step: 4 blocks of one quad, 2 of two, or 1 of four.
          int64_t left = j1 - j0;
          for (; left >= kBlocksPerStep; left -= kBlocksPerStep) {
            if constexpr (CB4 == 1) {
              piece(a0, c, v, 0, -1);
              piece(a1, c + 1, v + block_bytes, 0, -1);
              piece(a2, c + 2, v + 2 * block_bytes, 0, -1);
              piece(a3, c + 3, v + 3 * block_bytes, 0, -1);
            } else if constexpr (CB4 == 2) {
              piece(a0, c, v, 0, -1);
              piece(a1, c, v, 1, -1);
              piece(a2, c + 1, v + block_bytes, 0, -1);
              piece(a3, c + 1, v + block_bytes, 1, -1);
            } else {
              piece(a0, c, v, 0, -1);
              piece(a1, c, v, 1, -1);
              piece(a2, c, v, 2, -1);
              piece(a3, c, v, 3, -1);
            }
            c += kBlocksPerStep;
            v += kBlocksPerStep * block_bytes;
          }
          // The last left < kBlocksPerStep blocks in one step without a
          // data-dependent branch: a block past the row's end is read as the
          // row's first block, or block 0 (the matrix has one), with zero weights.
          if constexpr (kBlocksPerStep > 1) {
            const int64_t back = j1 > j0 ? j1 - j0 - left : j0;  // to a stored block
            auto at = [&](int64_t b) { return b < left ? b : -back; };
            if constexpr (CB4 == 1) {
              piece(a0, c + at(0), v + at(0) * block_bytes, 0, -static_cast<int32_t>(left > 0));
              piece(a1, c + at(1), v + at(1) * block_bytes, 0, -static_cast<int32_t>(left > 1));
              piece(a2, c + at(2), v + at(2) * block_bytes, 0, -static_cast<int32_t>(left > 2));
            } else {
              piece(a0, c + at(0), v + at(0) * block_bytes, 0, -static_cast<int32_t>(left > 0));
              piece(a1, c + at(0), v + at(0) * block_bytes, 1, -static_cast<int32_t>(left > 0));
            }
          }
        }
        for (int g = 0; g < G; ++g) {
          const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(a0[g], a1[g]), _mm512_add_epi32(a2[g], a3[g]));
          _mm512_store_si512(part[g][r], sum);
        }
      }
      store_batch_tile<G>(epi, part, m0, rows, t8, x_zp);
    }
  }

  // Epilogue of slot tile t for activation row m: lane j of sum is channel 16t + j.
  template <class Epilogue>
  void store_slot_tile(const Epilogue& epi, int64_t m, int64_t t, __m512i sum, int32_t x_zp) const {
    epi.store(m, 16 * t, valid_rows(2 * t),
              _mm256_sub_epi32(_mm512_castsi512_si256(sum), zero_point_term(2 * t, x_zp)));
    if (2 * t + 1 < tiles_) {
      epi.store(m, 16 * t + 8, valid_rows(2 * t + 1),
                _mm256_sub_epi32(_mm512_extracti64x4_epi64(sum, 1), zero_point_term(2 * t + 1, x_zp)));
    }
  }

  // ---- Column quads layout ----

  // The column quads counterpart of prefetch_steps, for the multi-row kernels.
  void prefetch_entries(int64_t e) const {
    prefetch_ahead(cq_.weights.data() + 32 * e, 32 * kPrefetchSteps);
    prefetch_ahead(cq_.cols.data() + 4 * e, 4 * int64_t{sizeof(uint32_t)} * kPrefetchSteps);
  }

  template <class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_gemv(const Epilogue& epi, const uint8_t* x, int64_t m,
                                             int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t e0 = cq_.tile_start[t], e1 = cq_.tile_start[t + 1];
      // An entry's 4 activations as one word, broadcast to the 8 rows.
      auto entry = [&](__m256i acc, int64_t e) {
        const uint32_t* c = cq_.cols.data() + 4 * e;
        const uint32_t word = uint32_t{x[c[0]]} | uint32_t{x[c[1]]} << 8 | uint32_t{x[c[2]]} << 16 |
                              uint32_t{x[c[3]]} << 24;
        return dpbusd256(acc, _mm256_set1_epi32(static_cast<int32_t>(word)),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cq_.weights.data() + 32 * e)));
      };
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      __m256i acc2 = _mm256_setzero_si256(), acc3 = _mm256_setzero_si256();
      int64_t e = e0;
      for (; e + 4 <= e1; e += 4) {
        acc0 = entry(acc0, e);
        acc1 = entry(acc1, e + 1);
        acc2 = entry(acc2, e + 2);
        acc3 = entry(acc3, e + 3);
      }
      for (; e < e1; ++e) acc0 = entry(acc0, e);
      const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(acc0, acc1), _mm256_add_epi32(acc2, acc3));
      epi.store(m, t * kTileRows, valid_rows(t), _mm256_sub_epi32(sum, zero_point_term(t, x_zp)));
    }
  }

  // Rows m0 .. m0 + rows - 1 (rows <= R, R in {2, 4, 8}) of column quads.
  // The rows are first transposed so that each input column's R bytes are
  // adjacent (missing rows zero); an entry's 4 columns then take 4 loads, and
  // one byte shuffle turns them into the R rows' activation words. Each
  // vector multiplies two rows' words (lanes 0-7 and 8-15, each broadcast to
  // the 8 channels) with the entry's weights in both halves.
  template <int R, class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_rows(const Epilogue& epi, const uint8_t* x, int64_t ldx, int64_t m0,
                                             int rows, int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    static_assert(R == 2 || R == 4 || R == 8, "R");
    constexpr int P = R / 2;                 // row pairs, one accumulator each
    constexpr int U = R == 8 ? 1 : 4 / R;    // entry sets in flight (4 or more chains)
    uint8_t* xt = thread_scratch<Vec64>(static_cast<size_t>(ceil_div(kp_ * R, 64)))->b;
    transpose_rows<R>(x + m0 * ldx, ldx, rows, xt);
    // Lane i of pair p's vector reads row word 2p + i / 8.
    __m512i pair_idx[P];
    for (int p = 0; p < P; ++p) {
      pair_idx[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2 * p)),
                                       _mm256_set1_epi32(2 * p + 1), 1);
    }
    auto row_words = [&](int64_t e) {  // dword r: row r's word of entry e
      const uint32_t* c = cq_.cols.data() + 4 * e;
      if constexpr (R == 2) {
        uint16_t v[4];
        for (int j = 0; j < 4; ++j) std::memcpy(&v[j], xt + 2 * int64_t{c[j]}, 2);
        const __m128i g = _mm_setr_epi16(static_cast<int16_t>(v[0]), static_cast<int16_t>(v[1]),
                                         static_cast<int16_t>(v[2]), static_cast<int16_t>(v[3]), 0, 0, 0, 0);
        return _mm512_castsi128_si512(
            _mm_shuffle_epi8(g, _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, -1, -1, -1, -1, -1, -1, -1, -1)));
      } else if constexpr (R == 4) {
        const __m128i g = _mm_setr_epi32(load_i32(xt + 4 * int64_t{c[0]}), load_i32(xt + 4 * int64_t{c[1]}),
                                         load_i32(xt + 4 * int64_t{c[2]}), load_i32(xt + 4 * int64_t{c[3]}));
        return _mm512_castsi128_si512(
            _mm_shuffle_epi8(g, _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)));
      } else {
        int64_t v[4];
        for (int j = 0; j < 4; ++j) std::memcpy(&v[j], xt + 8 * int64_t{c[j]}, 8);
        // Per 128-bit half: columns (c0, c1), then (c2, c3), as 16-bit pairs per row.
        const __m256i g = _mm256_shuffle_epi8(
            _mm256_setr_epi64x(v[0], v[1], v[2], v[3]),
            _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                             0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
        const __m128i lo = _mm256_castsi256_si128(g), hi = _mm256_extracti128_si256(g, 1);
        return _mm512_castsi256_si512(_mm256_set_m128i(_mm_unpackhi_epi16(lo, hi), _mm_unpacklo_epi16(lo, hi)));
      }
    };
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m512i acc[U][P];
      for (int u = 0; u < U; ++u) {
        for (int p = 0; p < P; ++p) acc[u][p] = _mm512_setzero_si512();
      }
      auto entry = [&](__m512i (&a)[P], int64_t e) {
        prefetch_entries(e);
        const __m512i words = row_words(e);
        const __m512i w = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cq_.weights.data() + 32 * e)));
        for (int p = 0; p < P; ++p) a[p] = dpbusd(a[p], _mm512_permutexvar_epi32(pair_idx[p], words), w);
      };
      int64_t e = cq_.tile_start[t];
      const int64_t e1 = cq_.tile_start[t + 1];
      for (; e + U <= e1; e += U) {
        for (int u = 0; u < U; ++u) entry(acc[u], e + u);
      }
      for (; e < e1; ++e) entry(acc[0], e);
      const __m256i zp = zero_point_term(t, x_zp);
      for (int p = 0; p < P; ++p) {
        __m512i sum = acc[0][p];
        for (int u = 1; u < U; ++u) sum = _mm512_add_epi32(sum, acc[u][p]);
        if (2 * p < rows) {
          epi.store(m0 + 2 * p, t * kTileRows, valid_rows(t), _mm256_sub_epi32(_mm512_castsi512_si256(sum), zp));
        }
        if (2 * p + 1 < rows) {
          epi.store(m0 + 2 * p + 1, t * kTileRows, valid_rows(t),
                    _mm256_sub_epi32(_mm512_extracti64x4_epi64(sum, 1), zp));
        }
      }
    }
  }

  // xt[k * R + i] = x[i][k] for rows i < rows and columns k < padded_k();
  // rows rows .. R - 1 read as zero.
  template <int R>
  void transpose_rows(const uint8_t* x, int64_t ldx, int rows, uint8_t* xt) const {
    for (int64_t k = 0; k < kp_; k += 16) {
      const int64_t len = std::min<int64_t>(16, kp_ - k);
      __m128i r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < rows ? load_row16(x + i * ldx + k, len) : _mm_setzero_si128();
      transpose_16x16_epi8(r);  // r[j]: column k + j, byte = row
      for (int64_t j = 0; j < len; ++j) {
        alignas(16) uint8_t col[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(col), r[j]);
        std::memcpy(xt + (k + j) * R, col, R);
      }
    }
  }

  // Batch buffer of the column quads layout: for column k and group g of 16
  // activation rows, buf[k * groups + g] holds x[16g + i][k] in byte i. Rows
  // past `rows` are zero.
  void pack_columns(const uint8_t* x, int64_t ldx, int rows, int groups, __m128i* buf) const {
    for (int g = 0; g < groups; ++g) {
      const int valid = std::max(0, std::min(16, rows - 16 * g));
      for (int64_t k = 0; k < kp_; k += 16) {
        const int64_t len = std::min<int64_t>(16, kp_ - k);
        __m128i r[16];
        for (int i = 0; i < 16; ++i) {
          r[i] = i < valid ? load_row16(x + (16 * g + i) * ldx + k, len) : _mm_setzero_si128();
        }
        transpose_16x16_epi8(r);  // r[j]: column k + j, byte = row
        for (int64_t j = 0; j < len; ++j) _mm_store_si128(buf + (k + j) * groups + g, r[j]);
      }
    }
  }

  // Rows [m0, m0 + rows) for 16 * G activation rows: per entry and group, the
  // four columns are interleaved into one vector of 16 rows' words, which
  // meets each of the 8 output rows' broadcast weight word.
  template <int G, class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_batch(const Epilogue& epi, const __m128i* buf, int64_t m0,
                                              int rows, int32_t x_zp, int64_t t_begin,
                                              int64_t t_end) const {
    alignas(64) int32_t part[G][8][16];
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m512i acc[G][8];
      for (int g = 0; g < G; ++g) {
        for (int r = 0; r < 8; ++r) acc[g][r] = _mm512_setzero_si512();
      }
      for (int64_t e = cq_.tile_start[t]; e < cq_.tile_start[t + 1]; ++e) {
        const uint32_t* c = cq_.cols.data() + 4 * e;
        const int8_t* we = cq_.weights.data() + 32 * e;
        prefetch_entries(e);
        for (int g = 0; g < G; ++g) {
          const __m128i c0 = _mm_load_si128(buf + int64_t{c[0]} * G + g);
          const __m128i c1 = _mm_load_si128(buf + int64_t{c[1]} * G + g);
          const __m128i c2 = _mm_load_si128(buf + int64_t{c[2]} * G + g);
          const __m128i c3 = _mm_load_si128(buf + int64_t{c[3]} * G + g);
          const __m128i a = _mm_unpacklo_epi8(c0, c1), b = _mm_unpackhi_epi8(c0, c1);
          const __m128i d = _mm_unpacklo_epi8(c2, c3), f = _mm_unpackhi_epi8(c2, c3);
          const __m256i lo = _mm256_set_m128i(_mm_unpackhi_epi16(a, d), _mm_unpacklo_epi16(a, d));
          const __m256i hi = _mm256_set_m128i(_mm_unpackhi_epi16(b, f), _mm_unpacklo_epi16(b, f));
          const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
#pragma GCC unroll 8
          for (int r = 0; r < 8; ++r) {
            acc[g][r] = dpbusd(acc[g][r], xv, _mm512_set1_epi32(load_i32(we + 4 * r)));
          }
        }
      }
      for (int g = 0; g < G; ++g) {
        for (int r = 0; r < 8; ++r) _mm512_store_si512(part[g][r], acc[g][r]);
      }
      store_batch_tile<G>(epi, part, m0, rows, t, x_zp);
    }
  }

  QuadSlots s_;     // quad slots layout
  const BcsrMatrix* bcsr_ = nullptr;  // the canonical matrix, for batches (cb >= 4)
  ColumnQuads cq_;  // column quads layout
};

}  // namespace

std::unique_ptr<KernelPlan> make_avx512vnni_plan(const BcsrMatrix& m) {
  return std::make_unique<Avx512VnniPlan>(m);
}

}  // namespace tsb

#pragma GCC diagnostic pop
TSB_TARGET_END

#endif  // x86-64

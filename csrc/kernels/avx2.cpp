// The x86 AVX2 kernel variant.
//
// Exactness: no partial sum ever saturates, so every dot product is the exact
// int32 one (wrapping like the reference). Two ways of forming products:
//
//  * vpmaddwd on values widened to int16 (x: 0..255, w: -128..127): each pair
//    sum is at most 2 * 255 * 128 in magnitude. Used by the GEMVs and the
//    column pairs batch. The zero point is removed afterwards as in the
//    reference: acc = sum x * w - x_zp * row_sum.
//  * Sign transfer for vpmaddubsw (the quads batch), whose pair sums saturate
//    at int16: the unsigned operand is |w| (0..128) and the signed one the
//    activation byte x XOR 0x80 (= x - 128), XORed with 0xff where w < 0
//    (giving 127 - x = -(x - 128) - 1). Both are one XOR of the raw byte with
//    a per-weight mask. Then |w| * s = w * (x - 128) for w >= 0 and
//    w * (x - 128) + w for w < 0, every product lies in [-16384, 16256] and
//    every pair sum in [-32768, 32512]: no saturation. The constant parts go
//    into a precomputed per-row offset: sum x * w = sum |w| * s + 128 * row_sum
//    - (sum of the row's negative weights).
//
// Two packed layouts, both split into tiles of 8 output channels:
//
//  * Quads (every block shape except rb >= 8 with cb <= 2): each output row is
//    a list of 1x4 pieces, a uint16 quad index q (input columns 4q..4q+3) and 4
//    int8 weights. Blocks with cb >= 4 split into cb / 4 pieces per row; blocks
//    with cb < 4 are widened to the quad that holds them, zeros filling the rest.
//    Pieces whose 4 weights are zero are dropped. A tile's pieces are
//    contiguous, row after row: tile_start[t] is the first piece of tile t and
//    row_count[n] the number of pieces of output row n.
//  * Column pairs (rb in {8, 16}, cb in {1, 2}): each group of 8 output rows is
//    a list of entries, two input columns ka, kb and 16 int8 weights
//    w[i][a], w[i][b] for the 8 rows i. An 8x2 block is one entry (kb = ka + 1);
//    8x1 blocks are paired in column order (an odd last one gets a zero partner).
//
// Loop order: activation rows are processed in batches. A batch of one row
// (GEMV) reads x directly: quads load 8 pieces' activations per step, column
// pairs broadcast the (x[ka], x[kb]) pair to the 8 rows. A batch of 8, 16 or 32
// rows first re-lays the batch's activations in a buffer ordered for the
// layout (quads: raw bytes, 4 columns of 8 rows per vector; column pairs:
// int16), then streams each tile's weights once for the whole batch
// (column pairs: 8 rows against 8 output rows by lane rotations of the
// weights, see column_pairs_batch8). The buffers are per-thread scratch that
// is reused from call to call.
// Epilogues work on 8 output channels of one output row at a time, with the
// same float operations in the same order as requantize.h.
//
// The ISA is enabled for this file only: the target pragma covers everything
// below, which runs only after dispatch selected this variant. FMA is left
// disabled so that no multiply-add can ever be contracted in an epilogue.
#include <utility>

#include "kernel_registry.h"
#include "sparse_core.h"

#if defined(__x86_64__) || defined(_M_X64)

#pragma GCC push_options
#pragma GCC target("avx2")
#include "x86_common.h"

namespace tsb {
namespace {

// The batch kernels and the 1x4 GEMV are compiled as functions of their own:
// inlined together into run(), their static instantiations ran 5-15% slower
// than the dynamic ones (register allocation of one very large function).
#define TSB_KERNEL_NOINLINE __attribute__((noinline))

// Batch buffer bytes walked at a time, and tiles per walk (see quads_batch).
constexpr int64_t kPanelBytes = 48 * 1024;
constexpr int64_t kPanelTiles = 16;

// 32 activations of one row; columns at or past `len` read as 0.
inline __m256i load_row32_epu8(const uint8_t* src, int64_t len) {
  if (len >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  alignas(32) uint8_t t[32] = {};
  std::memcpy(t, src, static_cast<size_t>(len));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
}

// In place, within each 128-bit lane: 8x8 transpose of int16.
inline void transpose_8x8_epi16_lanes(__m256i r[8]) {
  const __m256i a0 = _mm256_unpacklo_epi16(r[0], r[1]), a1 = _mm256_unpackhi_epi16(r[0], r[1]);
  const __m256i a2 = _mm256_unpacklo_epi16(r[2], r[3]), a3 = _mm256_unpackhi_epi16(r[2], r[3]);
  const __m256i a4 = _mm256_unpacklo_epi16(r[4], r[5]), a5 = _mm256_unpackhi_epi16(r[4], r[5]);
  const __m256i a6 = _mm256_unpacklo_epi16(r[6], r[7]), a7 = _mm256_unpackhi_epi16(r[6], r[7]);
  const __m256i b0 = _mm256_unpacklo_epi32(a0, a2), b1 = _mm256_unpackhi_epi32(a0, a2);
  const __m256i b2 = _mm256_unpacklo_epi32(a1, a3), b3 = _mm256_unpackhi_epi32(a1, a3);
  const __m256i b4 = _mm256_unpacklo_epi32(a4, a6), b5 = _mm256_unpackhi_epi32(a4, a6);
  const __m256i b6 = _mm256_unpacklo_epi32(a5, a7), b7 = _mm256_unpackhi_epi32(a5, a7);
  r[0] = _mm256_unpacklo_epi64(b0, b4);
  r[1] = _mm256_unpackhi_epi64(b0, b4);
  r[2] = _mm256_unpacklo_epi64(b1, b5);
  r[3] = _mm256_unpackhi_epi64(b1, b5);
  r[4] = _mm256_unpacklo_epi64(b2, b6);
  r[5] = _mm256_unpackhi_epi64(b2, b6);
  r[6] = _mm256_unpacklo_epi64(b3, b7);
  r[7] = _mm256_unpackhi_epi64(b3, b7);
}

class Avx2Plan final : public KernelPlan {
 public:
  explicit Avx2Plan(const BcsrMatrix& m)
      : n_(m.N),
        kp_(m.padded_k()),
        quads_(ceil_div(m.padded_k(), 4)),
        tiles_(ceil_div(m.N, kTileRows)),
        column_pairs_(m.rb >= 8 && m.cb <= 2),
        row_sum_(row_sums(m)) {
    row_sum_.resize(std::max<int64_t>(tiles_ * kTileRows, m.padded_n()), 0);
    if (column_pairs_) {
      build_column_pairs(m);
    } else {
      QuadRows q(m, tiles_);
      tile_start_ = std::move(q.tile_start);
      row_count_ = std::move(q.row_count);
      quad_idx_ = std::move(q.quad_idx);
      weights_ = std::move(q.weights);
      build_sign_offsets();
    }
  }

  const char* name() const override { return "avx2"; }
  int64_t num_tiles() const override { return tiles_; }
  size_t packed_bytes() const override {
    return tile_start_.size() * sizeof(int32_t) + row_count_.size() * sizeof(uint16_t) +
           quad_idx_.size() * sizeof(uint16_t) + pair_cols_.size() * sizeof(uint32_t) +
           weights_.size() + (row_sum_.size() + sign_offset_.size()) * sizeof(int32_t);
  }

  void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                  int64_t t_end) const override {
    run(StaticEpilogue(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                   int64_t t_end) const override {
    run(DynamicEpilogue(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  void quantize_activations(const float* x, int64_t n, float inv_scale, int32_t zp,
                            uint8_t* q) const override {
    quantize_activations_avx2(x, n, inv_scale, zp, q);
  }

  bool finite_min_max(const float* x, int64_t n, float* lo, float* hi) const override {
    return finite_min_max_avx2(x, n, lo, hi);
  }

 private:
  int valid_rows(int64_t t) const {
    return static_cast<int>(std::min<int64_t>(kTileRows, n_ - t * kTileRows));
  }

  // x_zp * row_sum for the 8 channels of tile t.
  __m256i zero_point_term(int64_t t, int32_t x_zp) const {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_sum_.data() + t * kTileRows));
    return _mm256_mullo_epi32(_mm256_set1_epi32(x_zp), s);
  }

  // sign_offset_[n] = 128 * row_sum[n] - (sum of the negative weights of row n),
  // in wrapping int32 arithmetic: what quads_batch_panels' products lack (see there).
  void build_sign_offsets() {
    sign_offset_.assign(row_sum_.size(), 0);
    int64_t p = 0;
    for (size_t n = 0; n < row_count_.size(); ++n) {
      uint32_t negative = 0;
      for (int64_t i = 0; i < 4 * int64_t{row_count_[n]}; ++i) {
        const int8_t v = weights_[static_cast<size_t>(4 * p + i)];
        if (v < 0) negative += static_cast<uint32_t>(static_cast<int32_t>(v));
      }
      p += row_count_[n];
      sign_offset_[n] = static_cast<int32_t>(128u * static_cast<uint32_t>(row_sum_[n]) - negative);
    }
  }

  void build_column_pairs(const BcsrMatrix& m) {
    const int64_t bs = m.rb * m.cb;
    tile_start_.assign(tiles_ + 1, 0);
    auto add_entry = [&](uint32_t ka, uint32_t kb, const int8_t* wa, const int8_t* wb,
                         int64_t stride) {
      int8_t w[16];
      bool any = false;
      for (int i = 0; i < 8; ++i) {
        w[2 * i] = wa[i * stride];
        w[2 * i + 1] = wb ? wb[i * stride] : int8_t{0};
        any |= w[2 * i] != 0 || w[2 * i + 1] != 0;
      }
      if (!any) return;
      pair_cols_.push_back(ka);
      pair_cols_.push_back(kb);
      weights_.insert(weights_.end(), w, w + 16);
    };
    for (int64_t g = 0; g < tiles_; ++g) {
      const int64_t br = g * kTileRows / m.rb, r0 = g * kTileRows % m.rb;
      const int64_t j0 = m.row_ptr[br], j1 = m.row_ptr[br + 1];
      if (m.cb == 2) {
        // Row-major 8x2 slice: w[i][0], w[i][1] interleaved already.
        for (int64_t j = j0; j < j1; ++j) {
          const uint32_t k = static_cast<uint32_t>(m.col_idx[j]) * 2;
          const int8_t* w = m.values.data() + j * bs + r0 * 2;
          add_entry(k, k + 1, w, w + 1, 2);
        }
      } else {
        for (int64_t j = j0; j < j1; j += 2) {
          const int8_t* wa = m.values.data() + j * bs + r0;
          const uint32_t ka = static_cast<uint32_t>(m.col_idx[j]);
          if (j + 1 < j1) {
            add_entry(ka, static_cast<uint32_t>(m.col_idx[j + 1]), wa, wa + bs, 1);
          } else {
            add_entry(ka, ka, wa, nullptr, 1);
          }
        }
      }
      tile_start_[g + 1] = static_cast<int32_t>(pair_cols_.size() / 2);
    }
  }

  template <class Epilogue>
  void run(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
           int64_t m_end, int64_t t_begin, int64_t t_end) const {
    if (m_begin >= m_end || t_begin >= t_end) return;
    for (int64_t m = m_begin; m < m_end;) {
      const int64_t left = m_end - m;
      if (left == 1) {
        if (column_pairs_) {
          column_pairs_gemv(epi, x + m * ldx, m, x_zp, t_begin, t_end);
        } else {
          quads_gemv(epi, x + m * ldx, m, x_zp, t_begin, t_end);
        }
        break;
      }
      if (column_pairs_) {
        const int rows = static_cast<int>(std::min<int64_t>(left, 8));
        Vec32* buf = thread_scratch<Vec32>(static_cast<size_t>(ceil_div(kp_, 2)));
        pack_columns(x + m * ldx, ldx, rows, buf);
        column_pairs_batch8(epi, buf, m, rows, x_zp, t_begin, t_end);
        m += rows;
        continue;
      }
      // Four groups amortize each piece's sign masks best; measured faster
      // even when the buffer (8 bytes per column and group) leaves L1.
      const int groups = left >= 24 ? 4 : (left >= 12 ? 2 : 1);
      const int rows = static_cast<int>(std::min<int64_t>(left, 8 * groups));
      Vec32* buf = thread_scratch<Vec32>(static_cast<size_t>(quads_ * groups));
      pack_quad_bytes(x + m * ldx, ldx, rows, groups, buf);
      switch (groups) {
        case 4: quads_batch<4>(epi, buf, m, rows, x_zp, t_begin, t_end); break;
        case 2: quads_batch<2>(epi, buf, m, rows, x_zp, t_begin, t_end); break;
        default: quads_batch<1>(epi, buf, m, rows, x_zp, t_begin, t_end); break;
      }
      m += rows;
    }
  }

  // ---- Quads layout ----

  // The int16 activations of 4 pieces (quads idx[0..3] of the widened row
  // x16) in one vector: 64-bit broadcast loads merged by blends, which keeps
  // the shuffle units free; the 4 indices come from one 64-bit load.
  static __m256i load_4_quads(const int16_t* x16, const uint16_t* idx) {
    uint64_t i4;
    std::memcpy(&i4, idx, sizeof(i4));
    auto quad = [&](int j) {
      const int16_t* q = x16 + 4 * ((i4 >> (16 * j)) & 0xffff);
      return _mm256_castpd_si256(_mm256_broadcast_sd(reinterpret_cast<const double*>(q)));
    };
    const __m256i lo = _mm256_blend_epi32(quad(0), quad(1), 0x0c);
    const __m256i hi = _mm256_blend_epi32(quad(2), quad(3), 0xc0);
    return _mm256_blend_epi32(lo, hi, 0xf0);
  }

  // acc + the products of the first n (<= 8) of 8 pieces (32 weights) with
  // their activations. All 8 indices must be valid quads.
  static __m256i quads_dot8(__m256i acc, const int16_t* x16, const uint16_t* idx, const int8_t* w,
                            int n) {
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
    __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
    if (n < 8) {  // piece j's weights are the int32 lanes 2j and 2j + 1
      w0 = _mm256_and_si256(w0, lanes_below(2 * n));
      w1 = _mm256_and_si256(w1, lanes_below(2 * n - 8));
    }
    const __m256i p0 = _mm256_madd_epi16(load_4_quads(x16, idx), w0);
    const __m256i p1 = _mm256_madd_epi16(load_4_quads(x16, idx + 4), w1);
    return _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
  }

  // Dot products of one activation row with one output row's pieces, 8
  // pieces per step; the lanes of the result sum to the output. The last
  // partial group reads the following rows' pieces with weight 0, or, when
  // fewer than 8 pieces are left in the arrays (`readable`), a zero-padded copy.
  static __m256i quads_row_dot(const int16_t* x16, const uint16_t* idx, const int8_t* w,
                               int64_t count, int64_t readable) {
    __m256i acc = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) acc = quads_dot8(acc, x16, idx + i, w + 4 * i, 8);
    const int tail = static_cast<int>(count - i);
    if (tail == 0) return acc;
    if (i + 8 <= readable) return quads_dot8(acc, x16, idx + i, w + 4 * i, tail);
    uint16_t tail_idx[8] = {};
    alignas(32) int8_t tail_w[32] = {};
    std::memcpy(tail_idx, idx + i, static_cast<size_t>(tail) * sizeof(uint16_t));
    std::memcpy(tail_w, w + 4 * i, static_cast<size_t>(tail) * 4);
    return quads_dot8(acc, x16, tail_idx, tail_w, tail);
  }

  template <class Epilogue>
  TSB_KERNEL_NOINLINE void quads_gemv(const Epilogue& epi, const uint8_t* x, int64_t m, int32_t x_zp, int64_t t_begin,
                  int64_t t_end) const {
    // The row widened to int16 once, zero-padded to whole quads.
    const int64_t width = quads_ * 4;
    int16_t* x16 = thread_scratch<int16_t>(static_cast<size_t>(width));
    int64_t k = 0;
    for (; k + 16 <= kp_; k += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(x16 + k), load_row16_epu8(x + k, 16));
    }
    for (; k < width; ++k) x16[k] = k < kp_ ? x[k] : 0;
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc[8];
      int64_t p = tile_start_[t];
      for (int64_t r = 0; r < 8; ++r) {
        const int64_t count = row_count_[t * kTileRows + r];
        acc[r] = quads_row_dot(x16, quad_idx_.data() + p, weights_.data() + 4 * p, count,
                               static_cast<int64_t>(quad_idx_.size()) - p);
        p += count;
      }
      const __m256i sums = _mm256_sub_epi32(sum_lanes_8x8(acc), zero_point_term(t, x_zp));
      epi.store(m, t * kTileRows, valid_rows(t), sums);
    }
  }

  // Batch buffer of the quads layout: for quad q and group g of 8 activation
  // rows, the vector at index q * groups + g holds the raw bytes
  // x[i][4q..4q+3] of rows i = 0..7 of the group, row i in int32 lane i. Rows
  // past `rows` and columns past padded_k() are zero.
  void pack_quad_bytes(const uint8_t* x, int64_t ldx, int rows, int groups, Vec32* buf) const {
    for (int g = 0; g < groups; ++g) {
      const int valid = std::max(0, std::min(8, rows - 8 * g));
      for (int64_t k = 0; k < kp_; k += 32) {
        const int64_t len = std::min<int64_t>(32, kp_ - k);
        __m256i r[8];
        for (int i = 0; i < 8; ++i) {
          r[i] = i < valid ? load_row32_epu8(x + (8 * g + i) * ldx + k, len) : _mm256_setzero_si256();
        }
        transpose_8x8_epi32(r);  // r[j]: quad j of the 32 columns, lane = row
        const int64_t nq = ceil_div(len, 4);
        for (int64_t qq = 0; qq < nq; ++qq) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(buf + (k / 4 + qq) * groups + g), r[qq]);
        }
      }
    }
  }

  // Rows [m0, m0 + rows) for 8 * G activation rows at once: per piece, |w|
  // and the sign mask are formed once and multiplied with G activation
  // vectors (sign transfer, see the top of this file); the lanes of
  // vpmaddwd(products, 1) are the 8 rows' dot products with the piece.
  // When the batch buffer is larger than kPanelBytes, the quads are walked in
  // panels of that size, for kPanelTiles tiles at a time: each row's running
  // sums and position are kept between panels, so the tiles of a group reuse
  // a panel while it is in the near caches. (48 KB, more than a Zen 3 L1,
  // measured as fast as 24 and 32 KB panels there and faster than 16 KB: the
  // running sums cost as much as the misses they save.)
  template <int G, class Epilogue>
  void quads_batch(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows, int32_t x_zp,
                   int64_t t_begin, int64_t t_end) const {
    // Panels pay for themselves only at 4 groups (measured): with fewer,
    // a row's pieces per panel are too few for its running sums.
    const int64_t panel = std::max<int64_t>(1, kPanelBytes / (G * int64_t{sizeof(Vec32)}));
    if (G < 4 || panel >= quads_) {
      quads_batch_panels<G, false>(epi, buf, m0, rows, x_zp, t_begin, t_end, quads_);
    } else {
      quads_batch_panels<G, true>(epi, buf, m0, rows, x_zp, t_begin, t_end, panel);
    }
  }

  template <int G, bool kPanels, class Epilogue>
  TSB_KERNEL_NOINLINE void quads_batch_panels(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows,
                          int32_t x_zp, int64_t t_begin, int64_t t_end, int64_t panel) const {
    alignas(32) int32_t part[G][8][8];  // [group][output row][activation row]
    const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
    const __m256i sign_bit = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i running[kPanels ? kPanelTiles * kTileRows * G : 1];
    int64_t position[kPanels ? kPanelTiles * kTileRows : 1];
    for (int64_t tg = t_begin; tg < t_end; tg += kPanelTiles) {
      const int64_t tg_end = std::min(t_end, tg + kPanelTiles);
      for (int64_t q0 = 0; q0 < quads_; q0 += panel) {
        const int64_t q1 = std::min(quads_, q0 + panel);
        for (int64_t t = tg; t < tg_end; ++t) {
          int64_t row_begin = tile_start_[t];
          for (int64_t r = 0; r < 8; ++r) {
            const int64_t i = (t - tg) * kTileRows + r;
            const int64_t p_end = row_begin + row_count_[t * kTileRows + r];
            int64_t p = kPanels && q0 > 0 ? position[i] : row_begin;
            row_begin = p_end;
            __m256i acc[G];
            for (int g = 0; g < G; ++g) {
              acc[g] = kPanels && q0 > 0 ? running[i * G + g] : _mm256_setzero_si256();
            }
            for (; p < p_end && (!kPanels || quad_idx_[p] < q1); ++p) {
              const __m256i* xq = reinterpret_cast<const __m256i*>(buf + int64_t{quad_idx_[p]} * G);
              int32_t w4;
              std::memcpy(&w4, weights_.data() + 4 * p, 4);
              const __m256i w = _mm256_set1_epi32(w4);
              const __m256i w_abs = _mm256_abs_epi8(w);
              const __m256i flip = _mm256_xor_si256(_mm256_cmpgt_epi8(zero, w), sign_bit);
              for (int g = 0; g < G; ++g) {
                const __m256i s = _mm256_xor_si256(_mm256_load_si256(xq + g), flip);
                acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, s), ones));
              }
            }
            if (kPanels && q1 < quads_) {
              for (int g = 0; g < G; ++g) running[i * G + g] = acc[g];
              position[i] = p;
            } else {
              for (int g = 0; g < G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(part[g][r]), acc[g]);
            }
          }
          if (q1 == quads_) store_batch_tile<G>(epi, part, m0, rows, t, x_zp);
        }
      }
    }
  }

  // Epilogue of one tile of quads_batch: part[g][r][i] is the sum of output
  // row 8t + r for activation row m0 + 8g + i.
  template <int G, class Epilogue>
  void store_batch_tile(const Epilogue& epi, const int32_t (&part)[G][8][8], int64_t m0, int rows,
                        int64_t t, int32_t x_zp) const {
    const __m256i offset = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sign_offset_.data() + t * kTileRows));
    const __m256i zp_term = _mm256_sub_epi32(zero_point_term(t, x_zp), offset);
    for (int g = 0; g < G && 8 * g < rows; ++g) {
      __m256i c[8];
      for (int r = 0; r < 8; ++r) c[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part[g][r]));
      transpose_8x8_epi32(c);  // c[i]: activation row 8g + i, lane = output row
      for (int i = 0; i < 8 && 8 * g + i < rows; ++i) {
        epi.store(m0 + 8 * g + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(c[i], zp_term));
      }
    }
  }

  // ---- Column pairs layout ----

  template <class Epilogue>
  void column_pairs_gemv(const Epilogue& epi, const uint8_t* x, int64_t m, int32_t x_zp,
                         int64_t t_begin, int64_t t_end) const {
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      const int64_t e0 = tile_start_[t], e1 = tile_start_[t + 1];
      int64_t e = e0;
      for (; e + 2 <= e1; e += 2) {
        const int32_t xp0 = x[pair_cols_[2 * e]] | (x[pair_cols_[2 * e + 1]] << 16);
        const int32_t xp1 = x[pair_cols_[2 * e + 2]] | (x[pair_cols_[2 * e + 3]] << 16);
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights_.data() + 16 * e)));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights_.data() + 16 * e + 16)));
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(w0, _mm256_set1_epi32(xp0)));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(w1, _mm256_set1_epi32(xp1)));
      }
      if (e < e1) {
        const int32_t xp = x[pair_cols_[2 * e]] | (x[pair_cols_[2 * e + 1]] << 16);
        const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights_.data() + 16 * e)));
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(w, _mm256_set1_epi32(xp)));
      }
      const __m256i sums = _mm256_sub_epi32(_mm256_add_epi32(acc0, acc1), zero_point_term(t, x_zp));
      epi.store(m, t * kTileRows, valid_rows(t), sums);
    }
  }

  // Batch buffer of the column pairs layout: column k is 8 int16, the
  // activations x[k] of rows 0..7 (rows past `rows` are zero), at byte 16 * k.
  void pack_columns(const uint8_t* x, int64_t ldx, int rows, Vec32* buf) const {
    __m128i* cols = reinterpret_cast<__m128i*>(buf);
    for (int64_t k = 0; k < kp_; k += 16) {
      const int64_t len = std::min<int64_t>(16, kp_ - k);
      __m256i r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = i < rows ? load_row16_epu8(x + i * ldx + k, len) : _mm256_setzero_si256();
      }
      transpose_8x8_epi16_lanes(r);  // lane 0 of r[j]: column k + j; lane 1: k + 8 + j
      for (int64_t j = 0; j < 8 && j < len; ++j) {
        _mm_store_si128(cols + k + j, _mm256_castsi256_si128(r[j]));
        if (j + 8 < len) _mm_store_si128(cols + k + j + 8, _mm256_extracti128_si256(r[j], 1));
      }
    }
  }

  // Rows [m0, m0 + rows), rows <= 8. Per entry, P holds the 8 activation
  // rows' pairs (x[m][ka], x[m][kb]) (lane m) and W the 8 output rows' weight
  // pairs (lane i). Instead of broadcasting one operand per row (a load or a
  // shuffle per multiply-add), the 8 products per lane come from 8 lane
  // rotations of W: R[s] lane m = W lane rot(s, m), with
  // rot(s, m) = 4 * ((m / 4) ^ (s / 4)) + (m % 4 + s % 4) % 4, which for each m
  // runs through all 8 output rows as s does. acc[s] lane m is then the sum of
  // activation row m with output row rot(s, m); the tile's epilogue transposes
  // acc and puts each row's lanes back in output-row order with one vpermd.
  template <class Epilogue>
  TSB_KERNEL_NOINLINE void column_pairs_batch8(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows,
                           int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    const __m128i* cols = reinterpret_cast<const __m128i*>(buf);
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
      for (int64_t e = tile_start_[t]; e < tile_start_[t + 1]; ++e) {
        const __m128i xa = _mm_load_si128(cols + pair_cols_[2 * e]);
        const __m128i xb = _mm_load_si128(cols + pair_cols_[2 * e + 1]);
        const __m256i p = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(xa, xb)),
                                                  _mm_unpackhi_epi16(xa, xb), 1);
        const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights_.data() + 16 * e)));
        const __m256i h = _mm256_permute2x128_si256(w, w, 0x01);  // halves swapped
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p, w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p, _mm256_shuffle_epi32(w, 0x39)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(p, _mm256_shuffle_epi32(w, 0x4e)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(p, _mm256_shuffle_epi32(w, 0x93)));
        a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(p, h));
        a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(p, _mm256_shuffle_epi32(h, 0x39)));
        a6 = _mm256_add_epi32(a6, _mm256_madd_epi16(p, _mm256_shuffle_epi32(h, 0x4e)));
        a7 = _mm256_add_epi32(a7, _mm256_madd_epi16(p, _mm256_shuffle_epi32(h, 0x93)));
      }
      __m256i c[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
      transpose_8x8_epi32(c);  // c[m] lane s: activation row m, output row rot(s, m)
      const __m256i zp_term = zero_point_term(t, x_zp);
      for (int i = 0; i < rows; ++i) {
        const __m256i back = _mm256_load_si256(reinterpret_cast<const __m256i*>(kUnrotate[i]));
        epi.store(m0 + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(_mm256_permutevar8x32_epi32(c[i], back), zp_term));
      }
    }
  }

  // kUnrotate[m][i]: the rotation s with rot(s, m) == i (see column_pairs_batch8).
  alignas(32) static constexpr int32_t kUnrotate[8][8] = {
      {0, 1, 2, 3, 4, 5, 6, 7}, {3, 0, 1, 2, 7, 4, 5, 6}, {2, 3, 0, 1, 6, 7, 4, 5}, {1, 2, 3, 0, 5, 6, 7, 4},
      {4, 5, 6, 7, 0, 1, 2, 3}, {7, 4, 5, 6, 3, 0, 1, 2}, {6, 7, 4, 5, 2, 3, 0, 1}, {5, 6, 7, 4, 1, 2, 3, 0},
  };

  int64_t n_;       // output channels
  int64_t kp_;      // padded input columns (readable in every activation row)
  int64_t quads_;   // ceil(kp_ / 4)
  int64_t tiles_;   // ceil(n_ / 8)
  bool column_pairs_;
  std::vector<int32_t> tile_start_;  // first piece (quads) or entry (column pairs) of each tile
  std::vector<uint16_t> row_count_;  // quads: pieces per output row
  std::vector<uint16_t> quad_idx_;   // quads: one per piece
  std::vector<uint32_t> pair_cols_;  // column pairs: ka, kb per entry
  std::vector<int8_t> weights_;      // 4 per piece, or 16 per entry
  std::vector<int32_t> row_sum_;     // padded to tiles_ * 8
  std::vector<int32_t> sign_offset_;  // quads layout only; padded as row_sum_
};

}  // namespace

std::unique_ptr<KernelPlan> make_avx2_plan(const BcsrMatrix& m) {
  return std::make_unique<Avx2Plan>(m);
}

}  // namespace tsb

#pragma GCC pop_options

#endif  // x86-64

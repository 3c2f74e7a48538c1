// The kernels of the x86 AVX2 family, one class template over the instruction
// that forms the products:
//
//  * avx2.cpp, variant "avx2": Avx2Plan = Avx2FamilyPlan<SignTransferDot>,
//    products by vpmaddubsw as described below;
//  * avxvnni.cpp, variant "avxvnni": AvxVnniPlan = Avx2FamilyPlan<VnniDot>,
//    the same layouts and loops on CPUs with AVX-VNNI, where the VEX-encoded
//    vpdpbusd forms every product (unsigned activation bytes times signed
//    weight bytes, four per 32-bit lane, accumulated without saturation): the
//    batch buffers hold the raw activations and no sign transfer or offset is
//    needed.
//
// A Dot policy provides
//   static constexpr const char* kName;  // the variant's name
//   static constexpr bool kExact;        // dot() is exact for any bytes
//   static __m256i dot(__m256i acc, __m256i u, __m256i s);
// where dot() returns acc plus, in each 32-bit lane, the dot product of the 4
// unsigned bytes of u with the 4 signed bytes of s. Each variant file defines
// its policy and instantiates the template inside its own TSB_TARGET_BEGIN
// region (x86_target.h), after including this header there: like
// x86_common.h, everything here lives in an unnamed namespace, so each
// variant compiles its own copy for its own ISA only.
//
// Exactness: no partial sum ever saturates, so every dot product is the exact
// int32 one (wrapping like the reference). The ways of forming products:
//
//  * vpmaddwd on values widened to int16 (x: 0..255, w: -128..127): each pair
//    sum is at most 2 * 255 * 128 in magnitude. Used by the quads GEMV. The
//    zero point is removed afterwards as in the reference:
//    acc = sum x * w - x_zp * row_sum.
//  * vpdpbusd (VnniDot): exact for any bytes, on the raw activations and
//    weights.
//  * vpmaddubsw (SignTransferDot), whose pair sums saturate at int16, only on
//    operands that keep them within it: "sign transfer". The signed activation
//    is x' = x XOR 0x80 = x - 128 (int8), and
//    sum x * w = sum x' * w + 128 * row_sum.
//    - Quads batch (weights broadcast, activations loaded): the unsigned
//      operand is |w| (0..128), the signed one x' XORed with 0xff where w < 0
//      (giving ~x' = -x' - 1). Then |w| * s = w * x' for w >= 0 and w * x' + w
//      for w < 0: every product lies in [-16384, 16256], every pair sum in
//      [-32768, 32512]. The batch buffers hold x'; the per-weight mask is
//      vpcmpgtb(0, w); the constants go into a per-row offset:
//      sum x * w = sum |w| * s + 128 * row_sum - (sum of the row's negative weights).
//    - Batches whose activations are all below 128 (checked per batch; what
//      torch.ao's reduce_range observers produce): plain vpmaddubsw(x, w),
//      every pair sum within 2 * 127 * 128, no offset beyond x_zp * row_sum.
//    - Column quads (activations broadcast or interleaved, weights loaded):
//      the unsigned operand is |x'| (0..128), the signed one vpsignb(w, x') =
//      sign(x') * w, so |x'| * s = x' * w; this layout is built without -128
//      weights (ColumnQuads' no_min_weight), so the negation is exact and every
//      pair sum lies in [-32512, 32512].
//
// Two packed layouts of x86_layouts.h, both in tiles of 8 output channels:
// QuadRows ("quads") for every block shape except rb >= 8 with cb <= 2, and
// ColumnQuads ("column quads") for rb in {8, 16} with cb in {1, 2}.
//
// Loop order: activation rows are processed in batches. The last one or two
// rows are GEMVs that read x directly: quads load 8 pieces' activations per
// step (two rows sharing each step's indices and weights), column quads
// broadcast an entry's 4 activation bytes to the 8 rows. A batch of 8,
// 16 or 32 rows first re-lays the batch's activations in a buffer ordered for
// the layout (quads: 4 columns of 8 rows per vector; column quads: 8 rows per
// column), then streams each tile's weights once for the whole batch. The
// buffers are per-thread scratch that is reused from call to call.
// Epilogues work on 8 output channels of one output row at a time, with the
// same float operations in the same order as requantize.h.
//
// The ISA is enabled by the including file only: its target region covers
// this code, which runs only after dispatch selected the variant. FMA is left
// disabled so that no multiply-add can ever be contracted in an epilogue.
#pragma once

#include <utility>

#include "sparse_core.h"
#include "x86_common.h"
#include "x86_layouts.h"

namespace tsb {
namespace {

// Batch buffer bytes walked at a time, and tiles per walk (see quads_batch).
constexpr int64_t kPanelBytes = 48 * 1024;
constexpr int64_t kPanelTiles = 16;

// 32 (16) activations of one row; columns at or past `len` read as 0.
inline __m256i load_row32_epu8(const uint8_t* src, int64_t len) {
  if (len >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  alignas(32) uint8_t t[32] = {};
  std::memcpy(t, src, static_cast<size_t>(len));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
}

inline __m128i load_row16_u8(const uint8_t* src, int64_t len) {
  if (len >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  alignas(16) uint8_t t[16] = {};
  std::memcpy(t, src, static_cast<size_t>(len));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(t));
}

template <class Dot>
class Avx2FamilyPlan final : public KernelPlan, private TiledPlanShape {
 public:
  explicit Avx2FamilyPlan(const BcsrMatrix& m) : TiledPlanShape(m) {
    if (column_quads_) {
      // Sign transfer negates weights, which -128 does not survive; an exact
      // dot needs no split of -128 weights (see ColumnQuads).
      cq_ = ColumnQuads(m, tiles_, /*no_min_weight=*/!Dot::kExact);
    } else {
      q_ = QuadRows(m, tiles_);
      if constexpr (!Dot::kExact) build_sign_offsets(m);
    }
  }

  const char* name() const override { return Dot::kName; }
  int64_t num_tiles() const override { return tiles_; }
  // Entries (of 4 columns) or pieces, plus one per tile for its epilogue.
  int64_t work_before(int64_t t) const override {
    return t + (column_quads_ ? int64_t{cq_.tile_start[t]} : int64_t{q_.tile_start[t]} / 4);
  }
  size_t packed_bytes() const override {
    return q_.bytes() + cq_.bytes() + (row_sum_.size() + sign_offset_.size()) * sizeof(int32_t);
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
  // What to subtract from sign transfer sums of tile t for the exact
  // x_zp-corrected dot products: x_zp * row_sum - sign_offset.
  __m256i sign_transfer_term(int64_t t, int32_t x_zp) const {
    const __m256i offset = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sign_offset_.data() + t * kTileRows));
    return _mm256_sub_epi32(zero_point_term(t, x_zp), offset);
  }

  // sign_offset_[n] = 128 * row_sum[n] - (sum of the negative weights of row n),
  // in wrapping int32 arithmetic: what the sign transfer products lack (see
  // the top of this file).
  void build_sign_offsets(const BcsrMatrix& m) {
    std::vector<uint32_t> negative(row_sum_.size(), 0);
    const int64_t bs = m.rb * m.cb;
    for (int64_t br = 0; br < m.block_rows(); ++br) {
      for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
        for (int64_t i = 0; i < bs; ++i) {
          const int8_t v = m.values[j * bs + i];
          if (v < 0) negative[br * m.rb + i / m.cb] += static_cast<uint32_t>(int32_t{v});
        }
      }
    }
    sign_offset_.resize(row_sum_.size());
    for (size_t n = 0; n < row_sum_.size(); ++n) {
      sign_offset_[n] = static_cast<int32_t>(128u * static_cast<uint32_t>(row_sum_[n]) - negative[n]);
    }
  }

  template <class Epilogue>
  void run(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
           int64_t m_end, int64_t t_begin, int64_t t_end) const {
    if (m_begin >= m_end || t_begin >= t_end) return;
    for (int64_t m = m_begin; m < m_end;) {
      const int64_t left = m_end - m;
      // One or two rows: GEMVs, which read x directly; a batch of 8 would
      // re-lay the activations and form 8 rows' products for one or two.
      if (left <= 2) {
        if (column_quads_) {
          for (int64_t i = m; i < m_end; ++i) column_quads_gemv(epi, x + i * ldx, i, x_zp, t_begin, t_end);
        } else if (left == 2) {
          quads_gemv<2>(epi, x + m * ldx, ldx, m, x_zp, t_begin, t_end);
        } else {
          quads_gemv<1>(epi, x + m * ldx, ldx, m, x_zp, t_begin, t_end);
        }
        break;
      }
      if (column_quads_) {
        const int rows = static_cast<int>(std::min<int64_t>(left, 8));
        Vec32* buf = thread_scratch<Vec32>(static_cast<size_t>(ceil_div(kp_, 16) * 4));
        const bool raw = Dot::kExact || below_128(x + m * ldx, ldx, rows);
        pack_column_bytes(x + m * ldx, ldx, rows, raw, buf);
        if (raw) {
          column_quads_batch8<true>(epi, buf, m, rows, x_zp, t_begin, t_end);
        } else if constexpr (!Dot::kExact) {
          column_quads_batch8<false>(epi, buf, m, rows, x_zp, t_begin, t_end);
        }
        m += rows;
        continue;
      }
      // As many groups of 8 rows as the batch fills, up to 4: each piece's
      // |w| and sign mask are formed once per batch, and with more groups
      // over more rows. The buffer takes 8 bytes per column and group; where
      // it outgrows the near caches, quads_batch walks it in panels.
      const int groups = left >= 24 ? 4 : (left >= 12 ? 2 : 1);
      const int rows = static_cast<int>(std::min<int64_t>(left, 8 * groups));
      Vec32* buf = thread_scratch<Vec32>(static_cast<size_t>(quads_ * groups));
      // With an exact dot (VNNI), and for activations below 128 (what
      // torch.ao's reduce_range observers produce), the raw activations
      // multiply exactly, without sign transfer.
      const bool raw = Dot::kExact || below_128(x + m * ldx, ldx, rows);
      pack_quad_bytes(x + m * ldx, ldx, rows, groups, raw, buf);
      switch (groups) {
        case 4: quads_batch<4>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
        case 2: quads_batch<2>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
        default: quads_batch<1>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
      }
      m += rows;
    }
  }

  // ---- Quads layout ----

  // The int16 activations of 4 pieces (quads idx[0..3] of the widened row
  // x16) in one vector: 64-bit broadcast loads merged by blends, which keeps
  // the shuffle units free; the 4 indices come from one 64-bit load.
  static __m256i load_4_quads(const int16_t* x16, uint64_t i4) {
    auto quad = [&](int j) {
      const int16_t* q = x16 + 4 * ((i4 >> (16 * j)) & 0xffff);
      return _mm256_castpd_si256(_mm256_broadcast_sd(reinterpret_cast<const double*>(q)));
    };
    const __m256i lo = _mm256_blend_epi32(quad(0), quad(1), 0x0c);
    const __m256i hi = _mm256_blend_epi32(quad(2), quad(3), 0xc0);
    return _mm256_blend_epi32(lo, hi, 0xf0);
  }

  // acc[i] + the products of the first n (<= 8) of 8 pieces (32 weights)
  // with their activations in row x16[i], for R activation rows: the indices
  // and weights are loaded and widened once for all R. All 8 indices must be
  // valid quads.
  template <int R>
  static void quads_dot8(__m256i (&acc)[R], const int16_t* const (&x16)[R], const uint16_t* idx,
                         const int8_t* w, int n) {
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
    __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
    if (n < 8) {  // piece j's weights are the int32 lanes 2j and 2j + 1
      w0 = _mm256_and_si256(w0, lanes_below(2 * n));
      w1 = _mm256_and_si256(w1, lanes_below(2 * n - 8));
    }
    uint64_t lo, hi;  // the 8 indices
    std::memcpy(&lo, idx, sizeof(lo));
    std::memcpy(&hi, idx + 4, sizeof(hi));
    for (int i = 0; i < R; ++i) {
      const __m256i p0 = _mm256_madd_epi16(load_4_quads(x16[i], lo), w0);
      const __m256i p1 = _mm256_madd_epi16(load_4_quads(x16[i], hi), w1);
      acc[i] = _mm256_add_epi32(acc[i], _mm256_add_epi32(p0, p1));
    }
  }

  // Dot products of R activation rows with one output row's pieces, 8
  // pieces per step; the lanes of acc[i] sum to row i's output. The last
  // partial group reads the following rows' pieces with weight 0, or, when
  // fewer than 8 pieces are left in the arrays (`readable`), a zero-padded copy.
  template <int R>
  static void quads_row_dot(__m256i (&acc)[R], const int16_t* const (&x16)[R], const uint16_t* idx,
                            const int8_t* w, int64_t count, int64_t readable) {
    for (auto& a : acc) a = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) quads_dot8<R>(acc, x16, idx + i, w + 4 * i, 8);
    const int tail = static_cast<int>(count - i);
    if (tail == 0) return;
    if (i + 8 <= readable) return quads_dot8<R>(acc, x16, idx + i, w + 4 * i, tail);
    uint16_t tail_idx[8] = {};
    alignas(32) int8_t tail_w[32] = {};
    std::memcpy(tail_idx, idx + i, static_cast<size_t>(tail) * sizeof(uint16_t));
    std::memcpy(tail_w, w + 4 * i, static_cast<size_t>(tail) * 4);
    quads_dot8<R>(acc, x16, tail_idx, tail_w, tail);
  }

  // R (1 or 2) activation rows m .. m + R - 1 against the quads: each row
  // widened to int16 once, zero-padded to whole quads. Two rows share the
  // index and weight loads and the widening of the weights.
  template <int R, class Epilogue>
  TSB_KERNEL_NOINLINE void quads_gemv(const Epilogue& epi, const uint8_t* x, int64_t ldx, int64_t m,
                                      int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    const int64_t width = quads_ * 4;
    int16_t* scratch = thread_scratch<int16_t>(static_cast<size_t>(width * R));
    const int16_t* x16[R];
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = x + i * ldx;
      int16_t* out = scratch + i * width;
      int64_t k = 0;
      for (; k + 16 <= kp_; k += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), load_row16_epu8(row + k, 16));
      }
      for (; k < width; ++k) out[k] = k < kp_ ? row[k] : 0;
      x16[i] = out;
    }
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc[R][8];
      int64_t p = q_.tile_start[t];
      for (int64_t r = 0; r < 8; ++r) {
        const int64_t count = q_.row_count[t * kTileRows + r];
        __m256i a[R];
        quads_row_dot<R>(a, x16, q_.quad_idx.data() + p, q_.weights.data() + 4 * p, count,
                         static_cast<int64_t>(q_.quad_idx.size()) - p);
        for (int i = 0; i < R; ++i) acc[i][r] = a[i];
        p += count;
      }
      const __m256i term = zero_point_term(t, x_zp);
      for (int i = 0; i < R; ++i) {
        epi.store(m + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(sum_lanes_8x8(acc[i]), term));
      }
    }
  }

  // Whether every activation of rows [0, rows) is below 128.
  bool below_128(const uint8_t* x, int64_t ldx, int rows) const {
    for (int i = 0; i < rows; ++i) {
      __m256i any = _mm256_setzero_si256();
      for (int64_t k = 0; k < kp_; k += 32) {
        any = _mm256_or_si256(any, load_row32_epu8(x + i * ldx + k, std::min<int64_t>(32, kp_ - k)));
      }
      if (_mm256_movemask_epi8(any) != 0) return false;
    }
    return true;
  }

  // Batch buffer of the quads layout: for quad q and group g of 8 activation
  // rows, the vector at index q * groups + g holds the bytes x[i][4q..4q+3]
  // of rows i = 0..7 of the group, XOR 0x80 unless raw, row i in int32
  // lane i. Rows past `rows` and columns past padded_k() read as x = 0.
  void pack_quad_bytes(const uint8_t* x, int64_t ldx, int rows, int groups, bool raw,
                       Vec32* buf) const {
    const __m256i offset = _mm256_set1_epi8(static_cast<char>(raw ? 0 : 0x80));
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
          _mm256_store_si256(reinterpret_cast<__m256i*>(buf + (k / 4 + qq) * groups + g),
                             _mm256_xor_si256(r[qq], offset));
        }
      }
    }
  }

  // Rows [m0, m0 + rows) for 8 * G activation rows at once: per piece, the
  // weight word is broadcast once (with sign transfer, |w| and the sign mask
  // formed once; see the top of this file) and multiplied with G activation
  // vectors; the lanes of Dot::dot are the 8 rows' dot products with the piece.
  // When the batch buffer is larger than kPanelBytes, the quads are walked in
  // panels of that size, for kPanelTiles tiles at a time: each row's running
  // sums and position are kept between panels, so the tiles of a group reuse
  // a panel while it is in the near caches. A panel may exceed L1: every
  // panel boundary costs each row a save and a reload of its running sums,
  // which a smaller panel pays more often.
  template <int G, class Epilogue>
  void quads_batch(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows, int32_t x_zp,
                   bool raw, int64_t t_begin, int64_t t_end) const {
    // Panels only at 4 groups: with fewer, a row's pieces per panel are too
    // few to pay for saving and reloading its running sums.
    const int64_t panel = std::max<int64_t>(1, kPanelBytes / (G * int64_t{sizeof(Vec32)}));
    const bool panels = G == 4 && panel < quads_;
    if (raw) {
      if (panels) {
        quads_batch_panels<G, true, true>(epi, buf, m0, rows, x_zp, t_begin, t_end, panel);
      } else {
        quads_batch_panels<G, false, true>(epi, buf, m0, rows, x_zp, t_begin, t_end, quads_);
      }
    } else if constexpr (!Dot::kExact) {
      if (panels) {
        quads_batch_panels<G, true, false>(epi, buf, m0, rows, x_zp, t_begin, t_end, panel);
      } else {
        quads_batch_panels<G, false, false>(epi, buf, m0, rows, x_zp, t_begin, t_end, quads_);
      }
    }
  }

  // kRaw: the buffer holds the raw activations, multiplied with the raw
  // weights: by vpdpbusd, or by vpmaddubsw when all are below 128
  // (|pair sum| <= 2 * 127 * 128).
  template <int G, bool kPanels, bool kRaw, class Epilogue>
  TSB_KERNEL_NOINLINE void quads_batch_panels(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows,
                          int32_t x_zp, int64_t t_begin, int64_t t_end, int64_t panel) const {
    alignas(32) int32_t part[G][8][8];  // [group][output row][activation row]
    const __m256i zero = _mm256_setzero_si256();
    __m256i running[kPanels ? kPanelTiles * kTileRows * G : 1];
    int64_t position[kPanels ? kPanelTiles * kTileRows : 1];
    for (int64_t tg = t_begin; tg < t_end; tg += kPanelTiles) {
      const int64_t tg_end = std::min(t_end, tg + kPanelTiles);
      for (int64_t q0 = 0; q0 < quads_; q0 += panel) {
        const int64_t q1 = std::min(quads_, q0 + panel);
        for (int64_t t = tg; t < tg_end; ++t) {
          int64_t row_begin = q_.tile_start[t];
          for (int64_t r = 0; r < 8; ++r) {
            const int64_t i = (t - tg) * kTileRows + r;
            const int64_t p_end = row_begin + q_.row_count[t * kTileRows + r];
            int64_t p = kPanels && q0 > 0 ? position[i] : row_begin;
            row_begin = p_end;
            __m256i acc[G];
            for (int g = 0; g < G; ++g) {
              acc[g] = kPanels && q0 > 0 ? running[i * G + g] : _mm256_setzero_si256();
            }
            for (; p < p_end && (!kPanels || q_.quad_idx[p] < q1); ++p) {
              const __m256i* xq = reinterpret_cast<const __m256i*>(buf + int64_t{q_.quad_idx[p]} * G);
              int32_t w4;
              std::memcpy(&w4, q_.weights.data() + 4 * p, 4);
              const __m256i w = _mm256_set1_epi32(w4);
              if constexpr (kRaw) {
                for (int g = 0; g < G; ++g) acc[g] = Dot::dot(acc[g], _mm256_load_si256(xq + g), w);
              } else {
                const __m256i w_abs = _mm256_abs_epi8(w);
                const __m256i flip = _mm256_cmpgt_epi8(zero, w);
                for (int g = 0; g < G; ++g) {
                  acc[g] = Dot::dot(acc[g], w_abs, _mm256_xor_si256(_mm256_load_si256(xq + g), flip));
                }
              }
            }
            if (kPanels && q1 < quads_) {
              for (int g = 0; g < G; ++g) running[i * G + g] = acc[g];
              position[i] = p;
            } else {
              for (int g = 0; g < G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(part[g][r]), acc[g]);
            }
          }
          if (q1 == quads_) {
            store_batch_tile<G>(epi, part, m0, rows, t,
                                kRaw ? zero_point_term(t, x_zp) : sign_transfer_term(t, x_zp));
          }
        }
      }
    }
  }

  // Epilogue of one tile of quads_batch: part[g][r][i] is the sum of output
  // row 8t + r for activation row m0 + 8g + i, zp_term what to subtract.
  template <int G, class Epilogue>
  void store_batch_tile(const Epilogue& epi, const int32_t (&part)[G][8][8], int64_t m0, int rows,
                        int64_t t, __m256i zp_term) const {
    for (int g = 0; g < G && 8 * g < rows; ++g) {
      __m256i c[8];
      for (int r = 0; r < 8; ++r) c[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part[g][r]));
      transpose_8x8_epi32(c);  // c[i]: activation row 8g + i, lane = output row
      for (int i = 0; i < 8 && 8 * g + i < rows; ++i) {
        epi.store(m0 + 8 * g + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(c[i], zp_term));
      }
    }
  }

  // ---- Column quads layout ----

  // acc + the sign transfer products |x'| * (sign(x') * w) = x' * w (x' =
  // x - 128 as int8; w never -128 in this layout, so sign(x') * w is exact)
  // of 4 activation bytes with 4 weights per int32 lane.
  static __m256i signed_dot(__m256i acc, __m256i x, __m256i w) {
    return Dot::dot(acc, _mm256_abs_epi8(x), _mm256_sign_epi8(w, x));
  }

  // What to subtract from sums of x' * w of tile t: x' = x - 128, so the
  // exact sum of (x - x_zp) * w is sum x' * w + (128 - x_zp) * row_sum.
  __m256i signed_term(int64_t t, int32_t x_zp) const {
    return zero_point_term(t, x_zp - 128);
  }

  template <class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_gemv(const Epilogue& epi, const uint8_t* x, int64_t m,
                                             int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    // An entry's 4 activations as one word (x' = x XOR 0x80 unless the dot
    // is exact on the raw bytes), broadcast to the 8 rows.
    auto gather4 = [&](int64_t e) {
      const uint32_t* c = cq_.cols.data() + 4 * e;
      const uint32_t word = x[c[0]] | (x[c[1]] << 8) | (x[c[2]] << 16) | (uint32_t{x[c[3]]} << 24);
      return _mm256_set1_epi32(static_cast<int32_t>(Dot::kExact ? word : word ^ 0x80808080u));
    };
    auto entry = [&](__m256i acc, int64_t e) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cq_.weights.data() + 32 * e));
      return Dot::kExact ? Dot::dot(acc, gather4(e), w) : signed_dot(acc, gather4(e), w);
    };
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      const int64_t e1 = cq_.tile_start[t + 1];
      int64_t e = cq_.tile_start[t];
      for (; e + 2 <= e1; e += 2) {
        acc0 = entry(acc0, e);
        acc1 = entry(acc1, e + 1);
      }
      if (e < e1) acc0 = entry(acc0, e);
      const __m256i term = Dot::kExact ? zero_point_term(t, x_zp) : signed_term(t, x_zp);
      epi.store(m, t * kTileRows, valid_rows(t), _mm256_sub_epi32(_mm256_add_epi32(acc0, acc1), term));
    }
  }

  // Batch buffer of the column quads layout: column k is the 8 bytes
  // x[i][k] of rows i = 0..7, XOR 0x80 unless raw (rows past `rows` read
  // as x = 0), at byte 8 * k.
  void pack_column_bytes(const uint8_t* x, int64_t ldx, int rows, bool raw, Vec32* buf) const {
    const __m128i offset = _mm_set1_epi8(static_cast<char>(raw ? 0 : 0x80));
    uint8_t* cols = reinterpret_cast<uint8_t*>(buf);
    for (int64_t k = 0; k < kp_; k += 16) {
      const int64_t len = std::min<int64_t>(16, kp_ - k);
      __m128i r[8];
      for (int i = 0; i < 8; ++i) r[i] = i < rows ? load_row16_u8(x + i * ldx + k, len) : _mm_setzero_si128();
      // 8 x 16 byte transpose: out[j] holds columns 2j and 2j + 1.
      __m128i a[8], b[8];
      for (int i = 0; i < 4; ++i) {
        a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);      // columns 0..7
        a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);  // columns 8..15
      }
      for (int h = 0; h < 2; ++h) {  // rows 0..3, rows 4..7
        b[4 * h + 0] = _mm_unpacklo_epi16(a[4 * h], a[4 * h + 2]);      // columns 0..3
        b[4 * h + 1] = _mm_unpackhi_epi16(a[4 * h], a[4 * h + 2]);      // columns 4..7
        b[4 * h + 2] = _mm_unpacklo_epi16(a[4 * h + 1], a[4 * h + 3]);  // columns 8..11
        b[4 * h + 3] = _mm_unpackhi_epi16(a[4 * h + 1], a[4 * h + 3]);  // columns 12..15
      }
      for (int q = 0; q < 4; ++q) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(cols + 8 * (k + 4 * q)),
                         _mm_xor_si128(_mm_unpacklo_epi32(b[q], b[4 + q]), offset));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(cols + 8 * (k + 4 * q + 2)),
                         _mm_xor_si128(_mm_unpackhi_epi32(b[q], b[4 + q]), offset));
      }
    }
  }

  // Rows [m0, m0 + rows), rows <= 8. Per entry, the activation bytes of its 4
  // columns are interleaved once into one int32 per activation row (lane m),
  // and each output row's 4 weights, broadcast, meet them by sign transfer:
  // acc[i] lane m is output row i with activation row m. kRaw: the buffer
  // holds the raw activations (below 128 unless the dot is exact),
  // multiplied with the raw weights.
  template <bool kRaw, class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_batch8(const Epilogue& epi, const Vec32* buf, int64_t m0, int rows,
                                               int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    const uint8_t* cols = reinterpret_cast<const uint8_t*>(buf);
    auto column = [&](uint32_t k) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(cols + 8 * int64_t{k})); };
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc[8];
      for (auto& a : acc) a = _mm256_setzero_si256();
      for (int64_t e = cq_.tile_start[t]; e < cq_.tile_start[t + 1]; ++e) {
        const uint32_t* c = cq_.cols.data() + 4 * e;
        const __m128i x01 = _mm_unpacklo_epi8(column(c[0]), column(c[1]));
        const __m128i x23 = _mm_unpacklo_epi8(column(c[2]), column(c[3]));
        const __m256i p = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(x01, x23)),
                                                  _mm_unpackhi_epi16(x01, x23), 1);
        const __m256i u = kRaw ? p : _mm256_abs_epi8(p);
        const int8_t* w = cq_.weights.data() + 32 * e;
        for (int i = 0; i < 8; ++i) {
          int32_t w4;
          std::memcpy(&w4, w + 4 * i, 4);
          const __m256i wi = _mm256_set1_epi32(w4);
          acc[i] = Dot::dot(acc[i], u, kRaw ? wi : _mm256_sign_epi8(wi, p));
        }
      }
      transpose_8x8_epi32(acc);  // acc[m] lane i: activation row m, output row i
      const __m256i term = kRaw ? zero_point_term(t, x_zp) : signed_term(t, x_zp);
      for (int i = 0; i < rows; ++i) {
        epi.store(m0 + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(acc[i], term));
      }
    }
  }

  QuadRows q_;                        // quads layout
  ColumnQuads cq_;                    // column quads layout
  std::vector<int32_t> sign_offset_;  // quads with sign transfer: padded as row_sum_
};

}  // namespace
}  // namespace tsb

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
//  * vpdpbusd (VnniDot): exact for any bytes, on the raw activations and
//    weights. The zero point is removed afterwards as in the reference:
//    acc = sum x * w - x_zp * row_sum.
//  * vpmaddubsw (SignTransferDot), whose pair sums saturate at int16, only on
//    operands that keep them within it: "sign transfer". The signed activation
//    is x' = x XOR 0x80 = x - 128 (int8), and
//    sum x * w = sum x' * w + 128 * row_sum.
//    - Quads (weights expanded to the rows' lanes, activations loaded): the
//      unsigned operand is |w| (0..128), the signed one x' XORed with 0xff
//      where w < 0 (giving ~x' = -x' - 1). Then |w| * s = w * x' for w >= 0
//      and w * x' + w for w < 0: every product lies in [-16384, 16256], every
//      pair sum in [-32768, 32512]. The batch buffers hold x'; the per-weight
//      mask is vpcmpgtb(0, w); the constants go into a per-row offset:
//      sum x * w = sum |w| * s + 128 * row_sum - (sum of the row's negative weights).
//    - Rows whose activations are all below 128 (checked per pass; what
//      torch.ao's reduce_range observers produce): plain vpmaddubsw(x, w),
//      every pair sum within 2 * 127 * 128, no offset beyond x_zp * row_sum.
//    - Column quads (activations arranged to the lanes, weights broadcast):
//      the unsigned operand is |x'| (0..128), the signed one vpsignb(w, x') =
//      sign(x') * w, so |x'| * s = x' * w; this layout is built without -128
//      weights (ColumnQuads' no_min_weight), so the negation is exact and every
//      pair sum lies in [-32512, 32512].
//
// Two packed layouts of x86_layouts.h, both in tiles of 8 output channels:
// QuadRows ("quads") for every block shape except rb >= 8 with cb <= 2, and
// ColumnQuads ("column quads") for rb in {8, 16} with cb in {1, 2}.
//
// Loop order: a call's activation rows run in passes over the weights (see
// plan_passes). A pass of R rows (R in {1, 2, 4, 8}; quads also 16 and 32
// rows as 2 or 4 groups of 8) first re-lays its rows in a buffer ordered for
// the layout (quads: per quad, the R rows' 4 bytes; column quads: per column,
// 8 rows' bytes; one column quads row is read in place), then streams each
// tile's weights once. Every vector multiply fills its 8 lanes with real
// work: the quads kernels put 8 / R pieces of one output channel in a vector
// (lane l: piece l / R, row l % R), the column quads kernels 8 / R channels
// of one entry (lane l: row l / (8 / R), channel 8j / R + l % (8 / R) in the
// j-th of R multiplies), so a pass's time grows with R. The buffers are
// per-thread scratch that is reused from call to call. Epilogues work on 8
// output channels of one output row at a time, with the same float
// operations in the same order as requantize.h.
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
    plan_passes();
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
      const Pass pass = first_pass_[std::min(left, kPlannedRows)];
      m += column_quads_ ? column_quads_pass(epi, x, ldx, x_zp, m, left, pass, t_begin, t_end)
                         : quads_pass(epi, x, ldx, x_zp, m, left, pass, t_begin, t_end);
    }
  }

  // ---- Passes ----
  //
  // A call's rows run in passes over the weights, each pass one kernel for
  // R rows per group and G groups (quads: R in {1, 2, 4, 8}, G in {1, 2, 4}
  // with G > 1 only for R = 8; column quads: R in {1, 2, 4, 8}, G = 1). A
  // kernel's time per pass hardly depends on how many of its R * G rows are
  // real, so the rows are split into the passes of least total time, by a
  // table of each kernel's relative time per pass (pass_cost).

  struct Pass {
    int8_t r = 1, g = 1;
  };

  // Row counts planned exactly; a call with more rows runs the first pass
  // planned for this many until fewer are left.
  static constexpr int64_t kPlannedRows = 64;

  static constexpr Pass kQuadsPasses[] = {{1, 1}, {2, 1}, {4, 1}, {8, 1}, {8, 2}, {8, 4}};
  static constexpr Pass kColumnPasses[] = {{1, 1}, {2, 1}, {4, 1}, {8, 1}};

  // Relative time of one pass of kernel i of kQuadsPasses or kColumnPasses
  // over the same weight (measured: docs/benchmark.md, "avx2 and avxvnni
  // small batches"), or 0 for a kernel the variant does not plan: with
  // vpdpbusd, two passes of 16 rows take less time than one of 32.
  static constexpr int pass_cost(bool column, int i) {
    constexpr int quads[2][6] = {{175, 222, 277, 365, 595, 1122}, {160, 180, 221, 225, 358, 0}};
    constexpr int columns[2][4] = {{105, 127, 192, 354}, {88, 114, 135, 191}};
    return column ? columns[Dot::kExact][i] : quads[Dot::kExact][i];
  }

  // first_pass_[n]: the first pass of the cheapest split of n rows.
  void plan_passes() {
    const int kinds = column_quads_ ? 4 : 6;
    const Pass* passes = column_quads_ ? kColumnPasses : kQuadsPasses;
    std::vector<int64_t> cost(kPlannedRows + 1, 0);
    for (int64_t n = 1; n <= kPlannedRows; ++n) {
      cost[n] = INT64_MAX;
      for (int i = 0; i < kinds; ++i) {
        if (pass_cost(column_quads_, i) == 0) continue;
        const int64_t c = pass_cost(column_quads_, i) + cost[std::max<int64_t>(0, n - passes[i].r * passes[i].g)];
        if (c < cost[n]) {
          cost[n] = c;
          first_pass_[n] = passes[i];
        }
      }
    }
  }

  // ---- Quads layout ----

  // One pass over the quads for the first rows of the `left` rows from m;
  // returns how many it computed.
  template <class Epilogue>
  int64_t quads_pass(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m,
                     int64_t left, Pass pass, int64_t t_begin, int64_t t_end) const {
    switch (pass.r * pass.g) {
      case 1: return quads_batch<1, 1>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
      case 2: return quads_batch<2, 1>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
      case 4: return quads_batch<4, 1>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
      case 8: return quads_batch<8, 1>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
      case 16: return quads_batch<8, 2>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
      default:
        if constexpr (pass_cost(false, 5) != 0) return quads_batch<8, 4>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
        return quads_batch<8, 2>(epi, x, ldx, x_zp, m, left, t_begin, t_end);
    }
  }

  // 8-byte words base[8 i .. 8 i + 7] for the 4 indices i in the 16-bit
  // fields of i4, in 64-bit lanes 0..3: broadcast loads merged by blends,
  // which keeps the shuffle units free.
  static __m256i gather_4_qwords(const uint8_t* base, uint64_t i4) {
    auto word = [&](int j) {
      const uint8_t* q = base + 8 * ((i4 >> (16 * j)) & 0xffff);
      return _mm256_castpd_si256(_mm256_broadcast_sd(reinterpret_cast<const double*>(q)));
    };
    const __m256i lo = _mm256_blend_epi32(word(0), word(1), 0x0c);
    const __m256i hi = _mm256_blend_epi32(word(2), word(3), 0xc0);
    return _mm256_blend_epi32(lo, hi, 0xf0);
  }

  // 4-byte words base[4 i .. 4 i + 3] for 8 indices i (the 16-bit fields of
  // lo, then of hi), in 32-bit lanes 0..7.
  static __m256i gather_8_dwords(const uint8_t* base, uint64_t lo, uint64_t hi) {
    auto word = [&](uint64_t i4, int j) {
      int32_t v;
      std::memcpy(&v, base + 4 * ((i4 >> (16 * j)) & 0xffff), 4);
      return _mm256_set1_epi32(v);
    };
    const __m256i a = _mm256_blend_epi32(word(lo, 0), word(lo, 1), 0x02);
    const __m256i b = _mm256_blend_epi32(word(lo, 2), word(lo, 3), 0x08);
    const __m256i c = _mm256_blend_epi32(word(hi, 0), word(hi, 1), 0x20);
    const __m256i d = _mm256_blend_epi32(word(hi, 2), word(hi, 3), 0x80);
    return _mm256_blend_epi32(_mm256_blend_epi32(a, b, 0x0c), _mm256_blend_epi32(c, d, 0xc0), 0xf0);
  }

  // The activations of the P = 8 / R pieces at idx[0 .. P - 1], group g of a
  // batch buffer of G groups of R rows: lane l holds row l % R's 4 bytes of
  // piece l / R.
  template <int R, int G>
  static __m256i piece_words(const uint8_t* buf, const uint16_t* idx, int g) {
    static_assert(R == 8 || G == 1, "groups of 8 rows only");
    if constexpr (R == 8) {
      return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + int64_t{idx[0]} * (32 * G) + 32 * g));
    } else if constexpr (R == 4) {
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + 16 * int64_t{idx[0]}));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + 16 * int64_t{idx[1]}));
      return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    } else if constexpr (R == 2) {
      uint64_t i4;
      std::memcpy(&i4, idx, sizeof(i4));
      return gather_4_qwords(buf, i4);
    } else {
      uint64_t lo, hi;
      std::memcpy(&lo, idx, sizeof(lo));
      std::memcpy(&hi, idx + 4, sizeof(hi));
      return gather_8_dwords(buf, lo, hi);
    }
  }

  // The weights of the P = 8 / R pieces at w (4 bytes each): lane l holds
  // piece l / R's.
  template <int R>
  static __m256i piece_weights(const int8_t* w) {
    if constexpr (R == 8) {
      int32_t w4;
      std::memcpy(&w4, w, 4);
      return _mm256_set1_epi32(w4);
    } else if constexpr (R == 4) {
      return _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))),
                                         _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    } else if constexpr (R == 2) {
      return _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                                         _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
    } else {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    }
  }

  // piece_weights of the U steps of P = 8 / R pieces from w. One piece per
  // step (R = 8) and sets of 4 steps: one 16-byte load broadcast to both
  // halves and an in-lane shuffle per step, instead of a broadcast load per
  // step (the vector loads, two per cycle, bound those loops).
  template <int R, int U>
  static void step_weights(const int8_t* w, __m256i (&out)[U]) {
    if constexpr (R == 8 && U % 4 == 0) {
      for (int u = 0; u < U; u += 4) {
        const __m256i w4 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 4 * u)));
        out[u] = _mm256_shuffle_epi32(w4, 0x00);
        out[u + 1] = _mm256_shuffle_epi32(w4, 0x55);
        out[u + 2] = _mm256_shuffle_epi32(w4, 0xaa);
        out[u + 3] = _mm256_shuffle_epi32(w4, 0xff);
      }
    } else {
      for (int u = 0; u < U; ++u) out[u] = piece_weights<R>(w + 4 * (8 / R) * u);
    }
  }

  // acc[g] + the products of weights w (as piece_weights) with the
  // activations of group g (as piece_words). Unless kRaw, the buffer holds
  // x' = x XOR 0x80 and the products are sign transfer ones (see the top of
  // this file); |w| and the sign mask are formed once for the G groups.
  template <int R, int G, bool kRaw>
  static void quads_step(__m256i (&acc)[G], const uint8_t* buf, const uint16_t* idx, __m256i w) {
    if constexpr (kRaw) {
      for (int g = 0; g < G; ++g) acc[g] = Dot::dot(acc[g], piece_words<R, G>(buf, idx, g), w);
    } else {
      const __m256i w_abs = _mm256_abs_epi8(w);
      const __m256i flip = _mm256_cmpgt_epi8(_mm256_setzero_si256(), w);
      for (int g = 0; g < G; ++g) {
        acc[g] = Dot::dot(acc[g], w_abs, _mm256_xor_si256(piece_words<R, G>(buf, idx, g), flip));
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

  // Batch buffer of the quads layout for G groups of R rows: for quad q and
  // group g, the 4 R bytes at (q * G + g) * 4 R hold x[i][4q..4q+3] of rows
  // i = 0..R-1 of the group, XOR 0x80 unless raw. Rows past `rows` and
  // columns past padded_k() read as x = 0.
  template <int R>
  void pack_quad_bytes(const uint8_t* x, int64_t ldx, int rows, int groups, bool raw,
                       uint8_t* buf) const {
    const __m256i offset = _mm256_set1_epi8(static_cast<char>(raw ? 0 : 0x80));
    for (int g = 0; g < groups; ++g) {
      const int valid = std::max(0, std::min(R, rows - R * g));
      for (int64_t k = 0; k < kp_; k += 32) {
        const int64_t len = std::min<int64_t>(32, kp_ - k);
        __m256i r[8];
        for (int i = 0; i < 8; ++i) {
          r[i] = i < valid ? load_row32_epu8(x + (R * g + i) * ldx + k, len) : _mm256_setzero_si256();
        }
        if constexpr (R > 1) transpose_8x8_epi32(r);  // r[j]: quad j of the 32 columns, lane = row
        const int64_t nq = ceil_div(len, 4);
        for (int64_t qq = 0; qq < nq; ++qq) {
          uint8_t* out = buf + ((k / 4 + qq) * groups + g) * 4 * R;
          if constexpr (R == 8) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_xor_si256(r[qq], offset));
          } else if constexpr (R == 4) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(_mm256_xor_si256(r[qq], offset)));
          } else if constexpr (R == 2) {
            _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(_mm256_xor_si256(r[qq], offset)));
          }
        }
        if constexpr (R == 1) {  // the row itself, in whole quads
          alignas(32) uint8_t t[32];
          _mm256_store_si256(reinterpret_cast<__m256i*>(t), _mm256_xor_si256(r[0], offset));
          std::memcpy(buf + k, t, static_cast<size_t>(4 * nq));
        }
      }
    }
  }

  // Accumulator sets of the quads kernels: vpdpbusd's latency needs several
  // independent chains; the sign transfer chains end in a one-cycle add, and
  // two sets pay there only for single pieces of one or two groups.
  template <int R, int G>
  static constexpr int quads_sets() {
    if constexpr (Dot::kExact) return R == 1 ? 2 : 4;
    return R == 8 && G <= 2 ? 2 : 1;
  }

  // Rows [m, m + min(left, R * G)) in one pass over the quads: the rows are
  // re-laid in a batch buffer (pack_quad_bytes) and each piece's weights
  // meet them there, P = 8 / R pieces per vector. Returns the rows done.
  // When the buffer is larger than kPanelBytes (4 groups of 8 rows), the
  // quads are walked in panels of that size, for kPanelTiles tiles at a time.
  template <int R, int G, class Epilogue>
  int64_t quads_batch(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m,
                      int64_t left, int64_t t_begin, int64_t t_end) const {
    const int rows = static_cast<int>(std::min<int64_t>(left, R * G));
    uint8_t* buf = thread_scratch<Vec64>(static_cast<size_t>(ceil_div(quads_ * R * G, 16)))->b;
    // With an exact dot (VNNI), and for activations below 128 (what
    // torch.ao's reduce_range observers produce), the raw activations
    // multiply exactly, without sign transfer.
    const bool raw = Dot::kExact || below_128(x + m * ldx, ldx, rows);
    pack_quad_bytes<R>(x + m * ldx, ldx, rows, G, raw, buf);
    // Panels only at 4 groups: with fewer, a row's pieces per panel are too
    // few to pay for saving and reloading its running sums.
    constexpr bool kPanels = G == 4;
    const int64_t panel = std::max<int64_t>(1, kPanelBytes / (G * int64_t{sizeof(Vec32)}));
    const bool panels = kPanels && panel < quads_;
    if (raw) {
      if (panels) {
        quads_rows<R, G, kPanels, true>(epi, buf, m, rows, x_zp, t_begin, t_end, panel);
      } else {
        quads_rows<R, G, false, true>(epi, buf, m, rows, x_zp, t_begin, t_end, quads_);
      }
    } else if constexpr (!Dot::kExact) {
      if (panels) {
        quads_rows<R, G, kPanels, false>(epi, buf, m, rows, x_zp, t_begin, t_end, panel);
      } else {
        quads_rows<R, G, false, false>(epi, buf, m, rows, x_zp, t_begin, t_end, quads_);
      }
    }
    return rows;
  }

  // The pieces of each output row in steps of P = 8 / R, against G groups of
  // R activation rows in the batch buffer; the steps are dealt round-robin
  // into U accumulator sets (independent chains), summed at the end. A row
  // starts with one masked round of U steps holding its first
  // count % (U * P) pieces (the pieces after those, the row's next ones or
  // QuadRows' padding, multiplied by zero; with single-piece steps, U - 1
  // steps hold them), so that no data-dependent branch ends it. kPanels (single pieces, one set): the quads are walked in
  // panels; each row's running sums and position are kept between panels,
  // so the tiles of a group reuse a panel while it is in the near caches.
  // kRaw: the buffer holds the raw activations, multiplied with the raw
  // weights: by vpdpbusd, or by vpmaddubsw when all are below 128
  // (|pair sum| <= 2 * 127 * 128).
  template <int R, int G, bool kPanels, bool kRaw, class Epilogue>
  TSB_KERNEL_NOINLINE void quads_rows(const Epilogue& epi, const uint8_t* buf, int64_t m0, int rows,
                                      int32_t x_zp, int64_t t_begin, int64_t t_end, int64_t panel) const {
    constexpr int P = 8 / R, U = quads_sets<R, G>();
    static_assert(U * P <= QuadRows::kPadPieces, "a round of steps from a row's end stays within the padding");
    static_assert(!kPanels || U * P == 1, "panels walk single pieces in one chain");
    alignas(32) int32_t part[G][8][8];  // [group][output row][lane]
    const uint16_t* const idx = q_.quad_idx.data();
    const int8_t* const wts = q_.weights.data();
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
            __m256i acc[U][G];
            for (int u = 0; u < U; ++u) {
              for (int g = 0; g < G; ++g) {
                acc[u][g] = kPanels && q0 > 0 ? running[i * G + g] : _mm256_setzero_si256();
              }
            }
            if constexpr (U * P > 1) {
              // The first (p_end - p) % (U * P) pieces, so that whole steps
              // end the row; the weights of the pieces after them masked to zero.
              const int head = static_cast<int>((p_end - p) % (U * P));
              __m256i w[U];
              step_weights<R, U>(wts + 4 * p, w);
              for (int u = 0; u < (P == 1 ? U - 1 : U); ++u) {  // head < U * P
                const __m256i keep = lanes_below(R * (head - u * P));
                quads_step<R, G, kRaw>(acc[u], buf, idx + p + u * P, _mm256_and_si256(w[u], keep));
              }
              p += head;
            }
            for (; p + U * P <= p_end && (!kPanels || idx[p + U * P - 1] < q1); p += U * P) {
              __m256i w[U];
              step_weights<R, U>(wts + 4 * p, w);
              for (int u = 0; u < U; ++u) quads_step<R, G, kRaw>(acc[u], buf, idx + p + u * P, w[u]);
            }
            for (int u = 1; u < U; ++u) {
              for (int g = 0; g < G; ++g) acc[0][g] = _mm256_add_epi32(acc[0][g], acc[u][g]);
            }
            if (kPanels && q1 < quads_) {
              for (int g = 0; g < G; ++g) running[i * G + g] = acc[0][g];
              position[i] = p;
            } else {
              for (int g = 0; g < G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(part[g][r]), acc[0][g]);
            }
          }
          if (q1 == quads_) {
            store_batch_tile<R, G>(epi, part, m0, rows, t,
                                   kRaw ? zero_point_term(t, x_zp) : sign_transfer_term(t, x_zp));
          }
        }
      }
    }
  }

  // Epilogue of one tile of quads_rows: part[g][r][l] is output row 8t + r's
  // sum for activation row m0 + R g + l % R (lane l, of P = 8 / R pieces),
  // zp_term what to subtract.
  template <int R, int G, class Epilogue>
  void store_batch_tile(const Epilogue& epi, const int32_t (&part)[G][8][8], int64_t m0, int rows,
                        int64_t t, __m256i zp_term) const {
    for (int g = 0; g < G && R * g < rows; ++g) {
      __m256i c[8];
      for (int r = 0; r < 8; ++r) c[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part[g][r]));
      transpose_8x8_epi32(c);  // c[l]: lane l, lane = output row
      for (int i = 0; i < R && R * g + i < rows; ++i) {
        __m256i sum = c[i];
        for (int j = 1; j < 8 / R; ++j) sum = _mm256_add_epi32(sum, c[i + R * j]);
        epi.store(m0 + R * g + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(sum, zp_term));
      }
    }
  }

  // ---- Column quads layout ----

  // One pass over the column quads for the first rows of the `left` rows
  // from m; returns how many it computed.
  template <class Epilogue>
  int64_t column_quads_pass(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m,
                            int64_t left, Pass pass, int64_t t_begin, int64_t t_end) const {
    const int rows = static_cast<int>(std::min<int64_t>(left, pass.r));
    // With an exact dot (VNNI), and for activations below 128, the raw
    // activations multiply exactly, without sign transfer.
    const bool raw = Dot::kExact || below_128(x + m * ldx, ldx, rows);
    if (pass.r == 1) {  // reads the row itself
      column_quads_batch<1>(epi, x + m * ldx, m, rows, x_zp, raw, t_begin, t_end);
      return 1;
    }
    uint8_t* buf = thread_scratch<Vec32>(static_cast<size_t>(ceil_div(kp_, 16) * 4))->b;
    pack_column_bytes(x + m * ldx, ldx, rows, raw, buf);
    switch (pass.r) {
      case 2: column_quads_batch<2>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
      case 4: column_quads_batch<4>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
      default: column_quads_batch<8>(epi, buf, m, rows, x_zp, raw, t_begin, t_end); break;
    }
    return rows;
  }

  template <int R, class Epilogue>
  void column_quads_batch(const Epilogue& epi, const uint8_t* src, int64_t m0, int rows, int32_t x_zp,
                          bool raw, int64_t t_begin, int64_t t_end) const {
    if (raw) {
      column_quads_rows<R, true>(epi, src, m0, rows, x_zp, t_begin, t_end);
    } else if constexpr (!Dot::kExact) {
      column_quads_rows<R, false>(epi, src, m0, rows, x_zp, t_begin, t_end);
    }
  }

  // What to subtract from sums of x' * w of tile t: x' = x - 128, so the
  // exact sum of (x - x_zp) * w is sum x' * w + (128 - x_zp) * row_sum.
  __m256i signed_term(int64_t t, int32_t x_zp) const {
    return zero_point_term(t, x_zp - 128);
  }

  // Batch buffer of the column quads layout: column k is the 8 bytes
  // x[i][k] of rows i = 0..7, XOR 0x80 unless raw (rows past `rows` read
  // as x = 0), at byte 8 * k.
  void pack_column_bytes(const uint8_t* x, int64_t ldx, int rows, bool raw, uint8_t* cols) const {
    const __m128i offset = _mm_set1_epi8(static_cast<char>(raw ? 0 : 0x80));
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

  // Weights of dot j of an entry for R rows: the 8 / R channels 8j / R ..
  // broadcast to the R rows, lane l holding channel 8j / R + l % (8 / R).
  template <int R>
  static __m256i column_weights(const int8_t* w, int j) {
    if constexpr (R == 8) {
      int32_t v;
      std::memcpy(&v, w + 4 * j, 4);
      return _mm256_set1_epi32(v);
    } else if constexpr (R == 4) {
      int64_t v;
      std::memcpy(&v, w + 8 * j, 8);
      return _mm256_set1_epi64x(v);
    } else if constexpr (R == 2) {
      return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * j)));
    } else {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    }
  }

  // In place: a[j] (lane l: activation row l / (8 / R), channel 8j / R +
  // l % (8 / R)) to a[i] = activation row i, lane = channel.
  template <int R>
  static void column_rows_transpose(__m256i (&a)[R]) {
    if constexpr (R == 8) {
      transpose_8x8_epi32(a);
    } else if constexpr (R == 4) {  // 4 x 4 of 64-bit (two-channel) elements
      const __m256i t0 = _mm256_unpacklo_epi64(a[0], a[1]), t1 = _mm256_unpackhi_epi64(a[0], a[1]);
      const __m256i t2 = _mm256_unpacklo_epi64(a[2], a[3]), t3 = _mm256_unpackhi_epi64(a[2], a[3]);
      a[0] = _mm256_permute2x128_si256(t0, t2, 0x20);
      a[1] = _mm256_permute2x128_si256(t1, t3, 0x20);
      a[2] = _mm256_permute2x128_si256(t0, t2, 0x31);
      a[3] = _mm256_permute2x128_si256(t1, t3, 0x31);
    } else if constexpr (R == 2) {  // 2 x 2 of 128-bit (four-channel) elements
      const __m256i lo = _mm256_permute2x128_si256(a[0], a[1], 0x20);
      a[1] = _mm256_permute2x128_si256(a[0], a[1], 0x31);
      a[0] = lo;
    }
  }

  // Accumulator sets of column_quads_rows (see quads_sets): 4 where a pass
  // has fewer multiplies per entry than that (single rows, and two rows with
  // vpdpbusd), else one per multiply of an entry.
  template <int R>
  static constexpr int column_sets() {
    return R <= (Dot::kExact ? 2 : 1) ? 4 : 1;
  }

  // Rows [m0, m0 + rows), rows <= R, from the column buffer: per entry, the
  // activation bytes of its 4 columns are interleaved once into one int32
  // per activation row, arranged so that R dots, each with the weights of
  // 8 / R channels, form the R rows' products with the 8 channels (lane l of
  // dot j: row l / (8 / R), channel 8j / R + l % (8 / R)). Entries are dealt
  // round-robin into U accumulator sets, the last e1 - e0 mod U into the
  // first. Unless kRaw, by sign transfer: |x'| times sign(x') * w.
  template <int R, bool kRaw, class Epilogue>
  TSB_KERNEL_NOINLINE void column_quads_rows(const Epilogue& epi, const uint8_t* src, int64_t m0, int rows,
                                             int32_t x_zp, int64_t t_begin, int64_t t_end) const {
    constexpr int U = column_sets<R>();
    auto column = [&](uint32_t k) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 8 * int64_t{k})); };
    auto entry = [&](__m256i (&acc)[R], int64_t e) {
      const uint32_t* c = cq_.cols.data() + 4 * e;
      __m256i p;
      if constexpr (R == 1) {
        // One row: its 4 bytes gathered by scalar loads (x' = x XOR 0x80
        // unless kRaw), which leaves the vector loads to the weights.
        const uint32_t word = uint32_t{src[c[0]]} | uint32_t{src[c[1]]} << 8 | uint32_t{src[c[2]]} << 16 |
                              uint32_t{src[c[3]]} << 24;
        p = _mm256_set1_epi32(static_cast<int32_t>(kRaw ? word : word ^ 0x80808080u));
      } else {
        const __m128i x01 = _mm_unpacklo_epi8(column(c[0]), column(c[1]));
        const __m128i x23 = _mm_unpacklo_epi8(column(c[2]), column(c[3]));
        const __m128i lo = _mm_unpacklo_epi16(x01, x23);  // rows 0..3
        if constexpr (R == 8) {
          p = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_unpackhi_epi16(x01, x23), 1);
        } else if constexpr (R == 4) {
          p = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(lo), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
        } else {
          p = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(lo), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
        }
      }
      const __m256i u = kRaw ? p : _mm256_abs_epi8(p);
      const int8_t* w = cq_.weights.data() + 32 * e;
      for (int j = 0; j < R; ++j) {
        const __m256i wj = column_weights<R>(w, j);
        acc[j] = Dot::dot(acc[j], u, kRaw ? wj : _mm256_sign_epi8(wj, p));
      }
    };
    for (int64_t t = t_begin; t < t_end; ++t) {
      __m256i acc[U][R];
      for (auto& set : acc) {
        for (auto& a : set) a = _mm256_setzero_si256();
      }
      const int64_t e1 = cq_.tile_start[t + 1];
      int64_t e = cq_.tile_start[t];
      for (; e + U <= e1; e += U) {
        for (int u = 0; u < U; ++u) entry(acc[u], e + u);
      }
      for (; e < e1; ++e) entry(acc[0], e);
      for (int u = 1; u < U; ++u) {
        for (int j = 0; j < R; ++j) acc[0][j] = _mm256_add_epi32(acc[0][j], acc[u][j]);
      }
      column_rows_transpose<R>(acc[0]);
      const __m256i term = kRaw ? zero_point_term(t, x_zp) : signed_term(t, x_zp);
      for (int i = 0; i < rows; ++i) {
        epi.store(m0 + i, t * kTileRows, valid_rows(t), _mm256_sub_epi32(acc[0][i], term));
      }
    }
  }

  Pass first_pass_[kPlannedRows + 1];  // see plan_passes
  QuadRows q_;                        // quads layout
  ColumnQuads cq_;                    // column quads layout
  std::vector<int32_t> sign_offset_;  // quads with sign transfer: padded as row_sum_
};

}  // namespace
}  // namespace tsb

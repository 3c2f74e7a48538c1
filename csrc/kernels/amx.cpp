// The x86 AMX kernel variant ("amx": AMX-TILE and AMX-INT8, with the OS
// granting the tile data, on a CPU that also runs avx512vnni).
//
// A plan holds the avx512vnni plan of the same weight and, for the calls
// where tiles pay (AmxTuning, kernel_registry.h), a tile path:
//
//  * Coarse blocks (rb = 16, any cb): the 16 channels of a block row share
//    their nonzero columns, so each "step" of 64 of those columns is a dense
//    16-channel weight tile, stored at plan construction in the layout
//    tdpbusd takes as its second source (B: row q holds the 16 channels'
//    weights on the step's columns 4q .. 4q+3, channel j at bytes 4j..4j+3).
//    Per step, the activations of the step's columns are gathered into a
//    buffer of up to 64 rows x 64 bytes (A tiles of 16 rows) and multiplied.
//    Work is proportional to the stored blocks.
//  * Fine blocks (rb < 16): per call, each nonempty 16-channel x 64-column
//    weight tile is expanded from the plan's sparse pieces (4 weights of one
//    channel on one quad, with their place in the tile) into a tile buffer of
//    1 KB, all-zero tiles skipped, and multiplied with every activation row
//    of a block of rows (up to 512; all the rows of most calls). Up to
//    kPanelTiles expanded tiles are held at once (16 KB, in L1); when a
//    channel tile has more, its sums are stored between panels and loaded
//    back. Nothing expands the whole matrix and the packed weight stays
//    sparse.
//
// Tiles: palette 1, tmm0..tmm3 accumulate up to 64 activation rows x 16
// channels (int32), tmm4 and tmm5 hold activation tiles (16 rows x 64
// bytes), tmm6 the weight tile. Every tile call loads the configuration and
// releases the tiles when it returns: another library on the same thread
// (oneDNN uses AMX for torch's dense ops) may configure the tiles otherwise
// or release them between our calls, which a per-thread "configured" flag
// cannot see.
//
// Exactness: tdpbusd multiplies unsigned activation bytes by signed weight
// bytes and accumulates in int32 without saturation, so every sum is exact
// as in the reference; the zero point is removed afterwards and the
// epilogues are the shared 8-channel ones of x86_common.h, which repeat the
// reference's float operations in its order.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <utility>

#include "kernel_registry.h"
#include "sparse_core.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(TSB_HAVE_AMX)

#include "x86_layouts.h"
#include "x86_target.h"

namespace tsb {
namespace {

std::atomic<int64_t> g_min_rows{AmxTuning{}.min_rows};
std::atomic<double> g_fine_min_fill{AmxTuning{}.fine_min_fill};

}  // namespace

void set_amx_tuning(const AmxTuning& t) {
  g_min_rows.store(t.min_rows);
  g_fine_min_fill.store(t.fine_min_fill);
}

AmxTuning amx_tuning() {
  AmxTuning t;
  t.min_rows = g_min_rows.load();
  t.fine_min_fill = g_fine_min_fill.load();
  return t;
}

}  // namespace tsb

#if defined(TSB_AMX_EMULATION)
// Test builds only (test/native/run.sh --x86-emulated): AVX2 code, with the
// AMX intrinsics emulated by the header this macro names.
TSB_TARGET_BEGIN("avx2")
#else
TSB_TARGET_BEGIN("avx2,amx-tile,amx-int8")
#endif
#include "x86_common.h"
#if defined(TSB_AMX_EMULATION)
#include TSB_AMX_EMULATION
#endif

namespace tsb {
namespace {

// The tile configuration (ldtilecfg's 64-byte operand), palette 1.
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

// tmm0..tmm6: 16 rows x 64 bytes each; tmm7 unused.
constexpr TileConfig kTileConfig = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0}};

constexpr int64_t kTileRowsAmx = 16;  // activation rows per A tile and channels per tile
constexpr int64_t kTileCols = 64;     // input columns (bytes) per A tile and B tile
constexpr int64_t kMaxGroups = 4;     // A tiles (16 rows each) per pass: tmm0..tmm3
constexpr int64_t kPanelTiles = 16;   // expanded fine weight tiles held at once
// Activation bytes per block of rows of the fine path (copied, then read once
// per channel tile and panel): a bound on the per-thread buffer for any batch.
constexpr int64_t kFineRowBytes = 256 * 1024;

// A weight tile as tdpbusd's B operand: 16 rows (quads) of 64 bytes.
struct alignas(64) WeightTile {
  int8_t b[kTileRowsAmx * kTileCols];
};

// A 64-byte row of an activation buffer.
struct alignas(64) Row64 {
  uint8_t b[kTileCols];
};

// GCC's tile intrinsics are asm statements that do not name the memory they
// read or write. A compiler barrier before every tile load and after every
// tile store keeps the buffers' ordinary stores and loads on their side of it.
inline void memory_barrier() { __asm__ volatile("" ::: "memory"); }

// Loads the configuration on construction, releases the tiles on destruction.
class TileSession {
 public:
  TileSession() {
    memory_barrier();
    _tile_loadconfig(&kTileConfig);
  }
  ~TileSession() { _tile_release(); }
  TileSession(const TileSession&) = delete;
  TileSession& operator=(const TileSession&) = delete;
};

// The accumulators of G groups of 16 rows: tmm0 .. tmm(G-1). Tile numbers are
// immediates of the instructions, hence the spelled-out cases.
template <int G>
inline void zero_acc() {
  _tile_zero(0);
  if constexpr (G > 1) _tile_zero(1);
  if constexpr (G > 2) _tile_zero(2);
  if constexpr (G > 3) _tile_zero(3);
}

// Group g from c + 16 * g rows of 16 int32 (64 bytes per row).
template <int G>
inline void load_acc(const int32_t* c) {
  memory_barrier();
  _tile_loadd(0, c, 64);
  if constexpr (G > 1) _tile_loadd(1, c + 16 * 16, 64);
  if constexpr (G > 2) _tile_loadd(2, c + 32 * 16, 64);
  if constexpr (G > 3) _tile_loadd(3, c + 48 * 16, 64);
}

template <int G>
inline void store_acc(int32_t* c) {
  _tile_stored(0, c, 64);
  if constexpr (G > 1) _tile_stored(1, c + 16 * 16, 64);
  if constexpr (G > 2) _tile_stored(2, c + 32 * 16, 64);
  if constexpr (G > 3) _tile_stored(3, c + 48 * 16, 64);
  memory_barrier();
}

// acc[g] += A_g * B: A_g is 16 rows of 64 activation bytes from a + 16 g lda
// (row stride lda), B the weight tile w.
template <int G>
inline void multiply(const uint8_t* a, int64_t lda, const WeightTile* w) {
  memory_barrier();
  _tile_loadd(6, w->b, 64);
  _tile_loadd(4, a, lda);
  _tile_dpbusd(0, 4, 6);
  if constexpr (G > 1) {
    _tile_loadd(5, a + 16 * lda, lda);
    _tile_dpbusd(1, 5, 6);
  }
  if constexpr (G > 2) {
    _tile_loadd(4, a + 32 * lda, lda);
    _tile_dpbusd(2, 4, 6);
  }
  if constexpr (G > 3) {
    _tile_loadd(5, a + 48 * lda, lda);
    _tile_dpbusd(3, 5, 6);
  }
}

class AmxPlan final : public KernelPlan, private TiledPlanShape {
 public:
  AmxPlan(const BcsrMatrix& m, const AmxTuning& tuning)
      : TiledPlanShape(m),
        tuning_(tuning),
        amx_tiles_(ceil_div(m.N, kTileRowsAmx)),
        chunks_(ceil_div(kp_, kTileCols)),
        cb_(m.cb),
        coarse_(m.rb % kTileRowsAmx == 0) {
#if !defined(TSB_AMX_EMULATION)
    if (!amx_tile_data_granted()) {
      throw std::runtime_error(
          "kernel variant 'amx': this process may not use AMX tiles (the CPU lacks AMX-TILE, "
          "or the OS does not enable or grant the tile data)");
    }
#endif
    vnni_ = make_avx512vnni_plan(m);
    // The avx512vnni plan's tiles are 16 channels (as ours) or 8 (two per ours).
    const int64_t vt = vnni_->num_tiles();
    if (vt == amx_tiles_) {
      vnni_per_tile_ = 1;
    } else if (vt == ceil_div(m.N, 8)) {
      vnni_per_tile_ = 2;
    } else {
      throw std::logic_error("kernel variant 'amx': unexpected avx512vnni tiling");
    }
    row_sum_.resize(std::max<size_t>(row_sum_.size(), static_cast<size_t>(amx_tiles_ * kTileRowsAmx)), 0);
    if (coarse_) {
      build_coarse(m);
    } else {
      build_fine(m);
    }
  }

  const char* name() const override { return "amx"; }
  int64_t num_tiles() const override { return amx_tiles_; }
  int64_t work_before(int64_t t) const override { return vnni_->work_before(vnni_tile(t)); }
  size_t packed_bytes() const override {
    return vnni_->packed_bytes() + row_sum_.size() * sizeof(int32_t) +
           coarse_step_start_.size() * sizeof(int64_t) + coarse_weights_.size() * sizeof(WeightTile) +
           row_ptr_.size() * sizeof(int32_t) + col_idx_.size() * sizeof(int32_t) +
           fine_tile_start_.size() * sizeof(int64_t) + fine_chunk_.size() * sizeof(uint32_t) +
           fine_piece_start_.size() * sizeof(int64_t) + fine_pos_.size() * sizeof(uint16_t) +
           fine_word_.size() * sizeof(uint32_t);
  }

  void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                  int64_t t_end) const override {
    if (m_begin >= m_end || t_begin >= t_end) return;
    if (!use_tiles(m_end - m_begin)) {
      vnni_->run_static(a, m_begin, m_end, vnni_tile(t_begin), vnni_tile(t_end));
      return;
    }
    run_tiles(StaticEpilogue(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end, int64_t t_begin,
                   int64_t t_end) const override {
    if (m_begin >= m_end || t_begin >= t_end) return;
    if (!use_tiles(m_end - m_begin)) {
      vnni_->run_dynamic(a, m_begin, m_end, vnni_tile(t_begin), vnni_tile(t_end));
      return;
    }
    run_tiles(DynamicEpilogue(a), a.x, a.ldx, a.x_zero_point, m_begin, m_end, t_begin, t_end);
  }

  void quantize_activations(const float* x, int64_t n, float inv_scale, int32_t zp,
                            uint8_t* q) const override {
    vnni_->quantize_activations(x, n, inv_scale, zp, q);
  }

  bool finite_min_max(const float* x, int64_t n, float* lo, float* hi) const override {
    return vnni_->finite_min_max(x, n, lo, hi);
  }

 private:
  // The first avx512vnni tile of our tile t (t in [0, num_tiles()]).
  int64_t vnni_tile(int64_t t) const { return std::min(t * vnni_per_tile_, vnni_->num_tiles()); }

  bool use_tiles(int64_t rows) const {
    return rows >= tuning_.min_rows && (coarse_ || fine_fill_ >= tuning_.fine_min_fill);
  }

  // ---- Layouts ----

  // Coarse blocks: block row r is channel tile r. Its stored blocks, in
  // groups of 64 / cb (64 columns), are its steps; a step's weight tile
  // holds column i of the step (block i / cb, column i % cb of the block) at
  // row i / 4, byte 4 j + i % 4 for channel j; the last step's columns past
  // its blocks are zero.
  void build_coarse(const BcsrMatrix& m) {
    row_ptr_ = m.row_ptr;
    col_idx_ = m.col_idx;
    const int64_t per_step = kTileCols / m.cb, bs = m.rb * m.cb;
    coarse_step_start_.assign(amx_tiles_ + 1, 0);
    for (int64_t r = 0; r < amx_tiles_; ++r) {
      const int64_t j0 = m.row_ptr[r], j1 = m.row_ptr[r + 1];
      for (int64_t s0 = j0; s0 < j1; s0 += per_step) {
        WeightTile w{};
        for (int64_t j = s0; j < std::min(j1, s0 + per_step); ++j) {
          for (int64_t ch = 0; ch < kTileRowsAmx; ++ch) {
            for (int64_t c = 0; c < m.cb; ++c) {
              const int64_t i = (j - s0) * m.cb + c;
              w.b[(i / 4) * kTileCols + 4 * ch + i % 4] = m.values[j * bs + ch * m.cb + c];
            }
          }
        }
        coarse_weights_.push_back(w);
      }
      coarse_step_start_[r + 1] = static_cast<int64_t>(coarse_weights_.size());
    }
  }

  // Fine blocks: for channel tile t, its nonempty 64-column chunks
  // fine_chunk_[fine_tile_start_[t] .. fine_tile_start_[t + 1]) in column
  // order; chunk entry e has the pieces fine_piece_start_[e] .. [e + 1]: the
  // 4 weights of one channel j on one quad q of the chunk (fine_word_) and
  // their byte offset in the expanded weight tile, 64 q + 4 j (fine_pos_).
  void build_fine(const BcsrMatrix& m) {
    struct Nonzero {
      int64_t chunk;
      uint16_t pos;  // byte offset of the piece in the expanded tile
      uint8_t byte;  // 0..3 within the piece
      int8_t v;
    };
    std::vector<Nonzero> nz;
    const int64_t bs = m.rb * m.cb;
    fine_tile_start_.assign(amx_tiles_ + 1, 0);
    fine_piece_start_.push_back(0);
    int64_t pieces = 0;
    for (int64_t t = 0; t < amx_tiles_; ++t) {
      nz.clear();
      const int64_t n0 = t * kTileRowsAmx, n1 = std::min(m.N, n0 + kTileRowsAmx);
      for (int64_t br = n0 / m.rb; br * m.rb < n1; ++br) {
        for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
          for (int64_t r = 0; r < m.rb; ++r) {
            const int64_t n = br * m.rb + r;
            if (n < n0 || n >= n1) continue;
            for (int64_t c = 0; c < m.cb; ++c) {
              const int8_t v = m.values[j * bs + r * m.cb + c];
              if (v == 0) continue;
              const int64_t k = int64_t{m.col_idx[j]} * m.cb + c;
              const int64_t q = (k % kTileCols) / 4;
              nz.push_back({k / kTileCols, static_cast<uint16_t>(q * kTileCols + 4 * (n - n0)),
                            static_cast<uint8_t>(k % 4), v});
            }
          }
        }
      }
      std::sort(nz.begin(), nz.end(), [](const Nonzero& a, const Nonzero& b) {
        return a.chunk != b.chunk ? a.chunk < b.chunk : a.pos < b.pos;
      });
      for (size_t i = 0; i < nz.size(); ++i) {
        const bool new_chunk = i == 0 || nz[i].chunk != nz[i - 1].chunk;
        if (new_chunk) {
          if (i > 0) fine_piece_start_.push_back(static_cast<int64_t>(fine_word_.size()));
          fine_chunk_.push_back(static_cast<uint32_t>(nz[i].chunk));
        }
        if (new_chunk || nz[i].pos != nz[i - 1].pos) {
          fine_pos_.push_back(nz[i].pos);
          fine_word_.push_back(0);
          ++pieces;
        }
        fine_word_.back() |= uint32_t{static_cast<uint8_t>(nz[i].v)} << (8 * nz[i].byte);
      }
      if (!nz.empty()) fine_piece_start_.push_back(static_cast<int64_t>(fine_word_.size()));
      fine_tile_start_[t + 1] = static_cast<int64_t>(fine_chunk_.size());
    }
    const int64_t tiles = static_cast<int64_t>(fine_chunk_.size());
    fine_fill_ = tiles == 0 ? 0.0 : static_cast<double>(pieces) / static_cast<double>(tiles * 256);
  }

  // ---- Tile path ----

  template <class Epilogue>
  void run_tiles(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
                 int64_t m_end, int64_t t_begin, int64_t t_end) const {
    TileSession session;
    if (coarse_) {
      run_coarse(epi, x, ldx, x_zp, m_begin, m_end, t_begin, t_end);
    } else {
      run_fine(epi, x, ldx, x_zp, m_begin, m_end, t_begin, t_end);
    }
  }

  // Output rows m0 .. m0 + rows - 1 of channel tile t from their int32 sums
  // (16 per row, 64 bytes apart).
  template <class Epilogue>
  void store_rows(const Epilogue& epi, const int32_t* sums, int64_t m0, int64_t rows, int64_t t,
                  int32_t x_zp) const {
    const bool second = 2 * t + 1 < tiles_;  // channels 16t + 8 .. exist
    const __m256i zp0 = zero_point_term(2 * t, x_zp);
    const __m256i zp1 = second ? zero_point_term(2 * t + 1, x_zp) : _mm256_setzero_si256();
    for (int64_t i = 0; i < rows; ++i) {
      const __m256i* s = reinterpret_cast<const __m256i*>(sums + i * kTileRowsAmx);
      epi.store(m0 + i, 16 * t, valid_rows(2 * t), _mm256_sub_epi32(_mm256_load_si256(s), zp0));
      if (second) {
        epi.store(m0 + i, 16 * t + 8, valid_rows(2 * t + 1), _mm256_sub_epi32(_mm256_load_si256(s + 1), zp1));
      }
    }
  }

  // Row i of the gather buffer: for the step's blocks j0 .. j1 - 1, the CB
  // activations of block j's columns at bytes (j - j0) * CB; the rest zero.
  template <int CB>
  void gather_row(uint8_t* dst, const uint8_t* x, int64_t j0, int64_t j1) const {
    const int32_t* cols = col_idx_.data();
    for (int64_t j = j0; j < j1; ++j) std::memcpy(dst + (j - j0) * CB, x + int64_t{cols[j]} * CB, CB);
    const int64_t used = (j1 - j0) * CB;
    if (used < kTileCols) std::memset(dst + used, 0, static_cast<size_t>(kTileCols - used));
  }

  template <class Epilogue>
  void run_coarse(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
                  int64_t m_end, int64_t t_begin, int64_t t_end) const {
    Row64* buf = thread_scratch<Row64>(kMaxGroups * kTileRowsAmx);
    alignas(64) int32_t sums[kMaxGroups * kTileRowsAmx * kTileRowsAmx];
    for (int64_t t = t_begin; t < t_end; ++t) {
      for (int64_t m = m_begin; m < m_end; m += kMaxGroups * kTileRowsAmx) {
        const int64_t rows = std::min(kMaxGroups * kTileRowsAmx, m_end - m);
        switch (ceil_div(rows, kTileRowsAmx)) {
          case 4: coarse_pass<4>(x, ldx, m, rows, t, buf, sums); break;
          case 3: coarse_pass<3>(x, ldx, m, rows, t, buf, sums); break;
          case 2: coarse_pass<2>(x, ldx, m, rows, t, buf, sums); break;
          default: coarse_pass<1>(x, ldx, m, rows, t, buf, sums); break;
        }
        store_rows(epi, sums, m, rows, t, x_zp);
      }
    }
  }

  // The sums of rows m .. m + rows - 1 (rows <= 16 G) for channel tile t into
  // sums (16 per row): per step, the rows' activations on the step's columns
  // are gathered into buf and multiplied with the step's weight tile.
  template <int G>
  TSB_KERNEL_NOINLINE void coarse_pass(const uint8_t* x, int64_t ldx, int64_t m, int64_t rows,
                                       int64_t t, Row64* buf, int32_t* sums) const {
    const int64_t per_step = kTileCols / cb_;
    for (int64_t i = rows; i < G * kTileRowsAmx; ++i) std::memset(buf[i].b, 0, kTileCols);
    zero_acc<G>();
    const int64_t j_end = row_ptr_[t + 1];
    int64_t j0 = row_ptr_[t];
    for (int64_t s = coarse_step_start_[t]; s < coarse_step_start_[t + 1]; ++s, j0 += per_step) {
      const int64_t j1 = std::min(j_end, j0 + per_step);
      for (int64_t i = 0; i < rows; ++i) {
        const uint8_t* xr = x + (m + i) * ldx;
        switch (cb_) {
          case 1: gather_row<1>(buf[i].b, xr, j0, j1); break;
          case 2: gather_row<2>(buf[i].b, xr, j0, j1); break;
          case 4: gather_row<4>(buf[i].b, xr, j0, j1); break;
          case 8: gather_row<8>(buf[i].b, xr, j0, j1); break;
          default: gather_row<16>(buf[i].b, xr, j0, j1); break;
        }
      }
      multiply<G>(buf[0].b, kTileCols, &coarse_weights_[s]);
    }
    store_acc<G>(sums);
  }

  // Rows [m_begin, m_end) in blocks of at most kFineRowBytes of activations
  // (between 64 and 512 rows), each block with every tile of [t_begin, t_end).
  template <class Epilogue>
  void run_fine(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
                int64_t m_end, int64_t t_begin, int64_t t_end) const {
    const int64_t row_bytes = chunks_ * kTileCols;
    const int64_t block = std::min<int64_t>(512, std::max<int64_t>(64, kFineRowBytes / row_bytes / 64 * 64));
    for (int64_t m = m_begin; m < m_end; m += block) {
      fine_rows(epi, x, ldx, x_zp, m, std::min(m_end, m + block), t_begin, t_end);
    }
  }

  // Rows [m_begin, m_end) are copied to a buffer of whole 64-column chunks and
  // whole groups of 16 rows, zero-padded, so that every A tile loads from it
  // directly. Per channel tile and panel of up to kPanelTiles nonempty chunks,
  // the panel's weight tiles are expanded once and multiplied with all rows,
  // 64 at a time; between panels the sums wait in `spill`.
  template <class Epilogue>
  void fine_rows(const Epilogue& epi, const uint8_t* x, int64_t ldx, int32_t x_zp, int64_t m_begin,
                 int64_t m_end, int64_t t_begin, int64_t t_end) const {
    const int64_t rows = m_end - m_begin;
    const int64_t padded_rows = ceil_div(rows, kTileRowsAmx) * kTileRowsAmx;
    const int64_t row_bytes = chunks_ * kTileCols;
    uint8_t* xs = thread_scratch<Row64>(static_cast<size_t>(padded_rows * chunks_))->b;
    for (int64_t i = 0; i < padded_rows; ++i) {
      uint8_t* d = xs + i * row_bytes;
      const int64_t copied = i < rows ? kp_ : 0;
      if (copied > 0) std::memcpy(d, x + (m_begin + i) * ldx, static_cast<size_t>(copied));
      std::memset(d + copied, 0, static_cast<size_t>(row_bytes - copied));
    }
    WeightTile* panel = thread_scratch<WeightTile>(kPanelTiles);
    int32_t* spill = thread_scratch<int32_t>(static_cast<size_t>(padded_rows * kTileRowsAmx));
    alignas(64) int32_t sums[kMaxGroups * kTileRowsAmx * kTileRowsAmx];
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t e_begin = fine_tile_start_[t], e_end = fine_tile_start_[t + 1];
      const int64_t panels = std::max<int64_t>(1, ceil_div(e_end - e_begin, kPanelTiles));
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t e0 = e_begin + p * kPanelTiles, e1 = std::min(e_end, e0 + kPanelTiles);
        for (int64_t e = e0; e < e1; ++e) expand(e, &panel[e - e0]);
        const bool first = p == 0, last = p == panels - 1;
        for (int64_t i = 0; i < padded_rows; i += kMaxGroups * kTileRowsAmx) {
          const int64_t n = std::min(kMaxGroups * kTileRowsAmx, padded_rows - i);
          const uint8_t* a = xs + i * row_bytes;
          int32_t* sp = spill + i * kTileRowsAmx;
          int32_t* out = last ? sums : sp;
          switch (n / kTileRowsAmx) {
            case 4: fine_pass<4>(a, row_bytes, panel, e0, e1, first, sp, out); break;
            case 3: fine_pass<3>(a, row_bytes, panel, e0, e1, first, sp, out); break;
            case 2: fine_pass<2>(a, row_bytes, panel, e0, e1, first, sp, out); break;
            default: fine_pass<1>(a, row_bytes, panel, e0, e1, first, sp, out); break;
          }
          if (last) store_rows(epi, sums, m_begin + i, std::min(n, rows - i), t, x_zp);
        }
      }
    }
  }

  // Chunk entry e's weight tile, from its pieces.
  void expand(int64_t e, WeightTile* w) const {
    std::memset(w->b, 0, sizeof(w->b));
    for (int64_t p = fine_piece_start_[e]; p < fine_piece_start_[e + 1]; ++p) {
      std::memcpy(w->b + fine_pos_[p], &fine_word_[p], 4);
    }
  }

  // 16 G rows of the chunk buffer a (row stride row_bytes) times the panel's
  // weight tiles (chunk entries e0 .. e1 - 1), onto zero (first) or the sums
  // in `in`; the sums go to `out`.
  template <int G>
  TSB_KERNEL_NOINLINE void fine_pass(const uint8_t* a, int64_t row_bytes, const WeightTile* panel,
                                     int64_t e0, int64_t e1, bool first, const int32_t* in,
                                     int32_t* out) const {
    if (first) {
      zero_acc<G>();
    } else {
      load_acc<G>(in);
    }
    for (int64_t e = e0; e < e1; ++e) {
      multiply<G>(a + int64_t{fine_chunk_[e]} * kTileCols, row_bytes, &panel[e - e0]);
    }
    store_acc<G>(out);
  }

  AmxTuning tuning_;
  std::unique_ptr<KernelPlan> vnni_;  // the avx512vnni plan: calls without tiles
  int64_t vnni_per_tile_ = 1;         // avx512vnni tiles per channel tile of ours
  int64_t amx_tiles_;                 // ceil(N / 16)
  int64_t chunks_;                    // ceil(padded K / 64)
  int64_t cb_;
  bool coarse_;                       // rb = 16

  // Coarse blocks.
  std::vector<int32_t> row_ptr_, col_idx_;    // the BCSR block indices
  std::vector<int64_t> coarse_step_start_;    // first step of each block row
  std::vector<WeightTile> coarse_weights_;    // per step

  // Fine blocks.
  std::vector<int64_t> fine_tile_start_;   // first chunk entry of each channel tile
  std::vector<uint32_t> fine_chunk_;       // per chunk entry: its 64-column chunk
  std::vector<int64_t> fine_piece_start_;  // per chunk entry, one more at the end
  std::vector<uint16_t> fine_pos_;         // per piece: byte offset in the tile
  std::vector<uint32_t> fine_word_;        // per piece: 4 weights, column 4q at the low byte
  double fine_fill_ = 0.0;                 // pieces / (chunk entries * 256)
};

}  // namespace

std::unique_ptr<KernelPlan> make_amx_plan(const BcsrMatrix& m, const AmxTuning& t) {
  return std::make_unique<AmxPlan>(m, t);
}

std::unique_ptr<KernelPlan> make_amx_plan(const BcsrMatrix& m) { return make_amx_plan(m, amx_tuning()); }

}  // namespace tsb

TSB_TARGET_END

#endif  // x86-64 with TSB_HAVE_AMX

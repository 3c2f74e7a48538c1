// Construction of the x86 packed layouts (see x86_layouts.h).
#if defined(__x86_64__) || defined(_M_X64)

#include "x86_layouts.h"

#include <algorithm>
#include <array>

namespace tsb {
namespace {

using Piece = std::pair<uint16_t, std::array<int8_t, 4>>;  // quad index, 4 weights

// The pieces of output channel n < m.N, in quad order, all-zero ones dropped.
// At most ceil(kMaxInFeatures / 4) of them, so quad indices fit in uint16.
void channel_pieces(const BcsrMatrix& m, int64_t n, std::vector<Piece>* out) {
  out->clear();
  const int64_t bs = m.rb * m.cb, br = n / m.rb, r = n % m.rb;
  for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
    for (int64_t c = 0; c < m.cb; ++c) {
      const int8_t v = m.values[j * bs + r * m.cb + c];
      if (v == 0) continue;
      const int64_t k = int64_t{m.col_idx[j]} * m.cb + c;
      const uint16_t q = static_cast<uint16_t>(k / 4);
      if (out->empty() || out->back().first != q) out->push_back({q, {0, 0, 0, 0}});
      out->back().second[k % 4] = v;
    }
  }
}

}  // namespace

QuadRows::QuadRows(const BcsrMatrix& m, int64_t tiles) {
  const int64_t rows = tiles * kTileRows;
  tile_start.assign(tiles + 1, 0);
  row_count.assign(rows, 0);
  std::vector<Piece> pieces;
  for (int64_t n = 0; n < rows; ++n) {
    if (n < m.N) {
      channel_pieces(m, n, &pieces);
      for (const Piece& p : pieces) {
        quad_idx.push_back(p.first);
        weights.insert(weights.end(), p.second.begin(), p.second.end());
      }
      row_count[n] = static_cast<uint16_t>(pieces.size());
    }
    if (n % kTileRows == kTileRows - 1) {
      tile_start[n / kTileRows + 1] = static_cast<int32_t>(quad_idx.size());
    }
  }
  quad_idx.resize(quad_idx.size() + kPadPieces, 0);
  weights.resize(weights.size() + 4 * kPadPieces, 0);
}

size_t QuadRows::bytes() const {
  return tile_start.size() * sizeof(int32_t) + row_count.size() * sizeof(uint16_t) +
         quad_idx.size() * sizeof(uint16_t) + weights.size();
}

ColumnQuads::ColumnQuads(const BcsrMatrix& m, int64_t tiles, bool no_min_weight) {
  const int64_t bs = m.rb * m.cb;
  tile_start.assign(tiles + 1, 0);
  std::vector<uint32_t> tile_cols;
  std::vector<int8_t> w;  // 8 per column, rows 0..7
  for (int64_t g = 0; g < tiles; ++g) {
    const int64_t br = g * kTileRows / m.rb, r0 = g * kTileRows % m.rb;
    tile_cols.clear();
    w.clear();
    for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
      for (int64_t c = 0; c < m.cb; ++c) {
        bool any = false;
        int8_t v[8];
        for (int64_t i = 0; i < 8; ++i) {
          v[i] = m.values[j * bs + (r0 + i) * m.cb + c];
          any |= v[i] != 0;
        }
        if (!any) continue;
        const uint32_t k = static_cast<uint32_t>(int64_t{m.col_idx[j]} * m.cb + c);
        tile_cols.push_back(k);
        int8_t rest[8] = {};
        bool split = false;
        for (int64_t i = 0; i < 8 && no_min_weight; ++i) {
          if (v[i] == -128) {
            v[i] = -127;
            rest[i] = -1;
            split = true;
          }
        }
        w.insert(w.end(), v, v + 8);
        if (split) {
          tile_cols.push_back(k);
          w.insert(w.end(), rest, rest + 8);
        }
      }
    }
    for (size_t e = 0; e < tile_cols.size(); e += 4) {
      for (size_t c = 0; c < 4; ++c) {
        // A missing fourth column repeats a valid one, with weight 0.
        cols.push_back(e + c < tile_cols.size() ? tile_cols[e + c] : tile_cols[e]);
      }
      for (int64_t i = 0; i < 8; ++i) {
        for (size_t c = 0; c < 4; ++c) {
          weights.push_back(e + c < tile_cols.size() ? w[(e + c) * 8 + i] : int8_t{0});
        }
      }
    }
    tile_start[g + 1] = static_cast<int32_t>(cols.size() / 4);
  }
}

size_t ColumnQuads::bytes() const {
  return tile_start.size() * sizeof(int32_t) + cols.size() * sizeof(uint32_t) + weights.size();
}

QuadSlots::QuadSlots(const BcsrMatrix& m) {
  const int64_t quads = (m.padded_k() + 3) / 4;
  tiles = (m.N + kSlots - 1) / kSlots;
  windows = (quads + kWindowStride - 1) / kWindowStride;
  tile_run.reserve(tiles + 1);
  // Per tile, each channel's pieces in quad order; the runs are made window by
  // window, each channel's cursor advancing through its pieces, so the work
  // grows with the pieces and runs, not with the windows.
  std::vector<std::vector<Piece>> pieces(kSlots);
  for (int64_t t = 0; t < tiles; ++t) {
    size_t next[kSlots] = {};
    for (int64_t j = 0; j < kSlots; ++j) {
      const int64_t n = t * kSlots + j;
      if (n < m.N) {
        channel_pieces(m, n, &pieces[j]);
      } else {
        pieces[j].clear();
      }
    }
    tile_run.push_back(static_cast<int64_t>(run_window.size()));
    for (;;) {
      // The window whose first half holds the lowest next piece of any channel.
      int64_t w = windows;
      for (int64_t j = 0; j < kSlots; ++j) {
        if (next[j] < pieces[j].size()) w = std::min<int64_t>(w, pieces[j][next[j]].first / kWindowStride);
      }
      if (w == windows) break;
      // As many steps as the most pieces a channel has in the first half.
      const int64_t first = w * kWindowStride, half_end = first + kWindowStride;
      const int64_t end = first + kWindowQuads;
      size_t steps = 0;
      for (int64_t j = 0; j < kSlots; ++j) {
        size_t i = next[j];
        while (i < pieces[j].size() && pieces[j][i].first < half_end) ++i;
        steps = std::max(steps, i - next[j]);
      }
      run_start.push_back(static_cast<int64_t>(step_window.size()));
      run_window.push_back(static_cast<uint16_t>(w));
      for (size_t s = 0; s < steps; ++s) {  // each channel's next piece in the window
        Weights wt{};
        Indices q{};
        for (int64_t j = 0; j < kSlots; ++j) {
          if (next[j] >= pieces[j].size() || pieces[j][next[j]].first >= end) {
            continue;  // padding: index 0, weight 0
          }
          const Piece& piece = pieces[j][next[j]++];
          for (int b = 0; b < 4; ++b) wt.w[4 * j + b] = piece.second[b];
          q.q[j] = static_cast<uint8_t>(piece.first - first);
        }
        weights.push_back(wt);
        indices.push_back(q);
        step_window.push_back(static_cast<uint16_t>(w));
      }
    }
  }
  tile_run.push_back(static_cast<int64_t>(run_window.size()));
  run_start.push_back(static_cast<int64_t>(step_window.size()));
  run_window.push_back(0);
}

size_t QuadSlots::bytes() const {
  return (tile_run.size() + run_start.size()) * sizeof(int64_t) + run_window.size() * sizeof(uint16_t) +
         step_window.size() * (sizeof(Weights) + sizeof(Indices) + sizeof(uint16_t));
}

}  // namespace tsb

#endif  // x86-64

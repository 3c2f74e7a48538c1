// Packed weight layouts of the x86 kernel variants (see the glossary in
// sparse_core.h). Each is built once from the canonical BcsrMatrix when a plan
// is made; nothing here uses vector instructions, so the constructors live in
// x86_layouts.cpp, compiled for the baseline ISA, and every variant shares them.
//
// A "piece" is one output channel's 4 weights on one quad (input columns
// 4q .. 4q+3): a quad index and a 32-bit word of 4 int8 weights, which is
// exactly one vpdpbusd lane. Blocks with cb >= 4 split into cb / 4 pieces per
// channel; blocks with cb < 4 widen to the quad that holds them, zeros filling
// the rest; pieces whose 4 weights are all zero are dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparse_core.h"

namespace tsb {

// Output channels per tile of the QuadRows and ColumnQuads layouts.
constexpr int64_t kTileRows = 8;

// Row quads: each output channel's pieces in quad order, channel after
// channel, in tiles of kTileRows channels. tile_start[t] is the first piece of
// tile t and row_count[n] the number of pieces of channel n. After the last
// piece, kPadPieces pieces of padding (quad 0, weights 0), so that a loop
// that reads whole steps of pieces past a channel's last stays inside the
// arrays.
struct QuadRows {
  static constexpr int64_t kPadPieces = 16;

  std::vector<int32_t> tile_start;
  std::vector<uint16_t> row_count;
  std::vector<uint16_t> quad_idx;
  std::vector<int8_t> weights;  // 4 per piece

  QuadRows() = default;
  QuadRows(const BcsrMatrix& m, int64_t tiles);
  size_t bytes() const;
};

// Column quads, for rb in {8, 16} with cb in {1, 2}: each tile's nonzero weight
// columns (an input column k and the weights w[i][k] of its 8 channels), in
// column order, four to an "entry": four input columns c0..c3 and 32 int8
// weights, channel i's w[i][c0..c3] at bytes 4i..4i+3. A tile's last entry is
// completed with zero weights on a valid column. tile_start[t] is the first
// entry of tile t. With no_min_weight, a weight -128 is stored as -127 plus a
// second column entry for the same input column holding the remaining -1 (so
// that every stored weight negates exactly, as the avx2 sign transfer needs).
struct ColumnQuads {
  std::vector<int32_t> tile_start;
  std::vector<uint32_t> cols;
  std::vector<int8_t> weights;

  ColumnQuads() = default;
  ColumnQuads(const BcsrMatrix& m, int64_t tiles, bool no_min_weight);
  size_t bytes() const;
};

// Quad slots: pieces of 16 output channels ("slot" j is channel 16t + j of
// tile t) dealt into "steps" of 16 slots, one piece per slot, so that a step
// is one 512-bit vector of weights whose lanes are 16 different channels.
// All pieces of a step lie in one "window" of kWindowQuads quads (128
// columns) that starts at a multiple of kWindowStride quads (64 columns):
// window w covers quads 16w .. 16w + 31, so a step's activation words come
// from the window's 128 bytes of a row, two vector registers, through one
// two-table permute. Per step: 16 weight words (64 bytes, 64-byte aligned),
// 16 quad indices within the window (0..31), and the window. Slots of
// channels without a piece in a step hold padding (index 0, weight 0).
//
// Dealing: a tile's steps run through the windows in order. At window w,
// the pieces in its first half (quads 16w .. 16w + 15) have no later window,
// so the window takes as many steps as the channel with most such pieces
// needs; in those steps every channel also deals its next pieces from the
// second half, which would otherwise wait for window w + 1. Overlapping
// windows fill more slots than disjoint ones (at 80% random block sparsity,
// about 76% of the slots instead of 61%).
struct QuadSlots {
  static constexpr int64_t kSlots = 16;
  static constexpr int64_t kWindowQuads = 32;
  static constexpr int64_t kWindowStride = 16;

  struct alignas(64) Weights {
    int8_t w[4 * kSlots];
  };
  struct Indices {
    uint8_t q[kSlots];
  };

  int64_t tiles = 0;
  // Window starts: ceil(quads / kWindowStride). A row read through the
  // windows spans (windows + 1) * kWindowStride quads, zero past its end.
  int64_t windows = 0;
  // The steps of a tile come in "runs", one per window that holds any of the
  // tile's steps: run r covers steps run_start[r] .. run_start[r + 1] - 1,
  // all in window run_window[r]; tile t's runs are tile_run[t] .. tile_run[t + 1] - 1.
  // (Storage grows with the steps, not with tiles x windows.)
  std::vector<int64_t> tile_run;      // tiles + 1 entries
  std::vector<int64_t> run_start;     // runs + 1 entries
  std::vector<uint16_t> run_window;   // per run, and a 0 after the last
  std::vector<Weights> weights;       // per step
  std::vector<Indices> indices;       // per step
  std::vector<uint16_t> step_window;  // per step

  QuadSlots() = default;
  explicit QuadSlots(const BcsrMatrix& m);
  int64_t tile_start(int64_t t) const { return run_start[tile_run[t]]; }
  // Bytes of one activation row as the kernels read it through the windows.
  int64_t row_bytes() const { return (windows + 1) * kWindowStride * 4; }
  size_t bytes() const;
};

}  // namespace tsb

// Test-only: the AMX-TILE and AMX-INT8 intrinsics that csrc/kernels/amx.cpp
// uses, written in portable C++ after the instructions' definitions in the
// Intel SDM (and the Intel AMX architecture specification), so that the amx
// kernel's own code (tile configuration, layouts, strides, row and column
// padding, epilogues) runs and is checked on x86-64 machines without AMX.
//
// test/native/run.sh --x86-emulated compiles amx.cpp with
// -DTSB_AMX_EMULATION='"<this file>"': the kernel then targets AVX2 only and
// includes this header after <immintrin.h>, whose AMX intrinsics the macros at
// the end replace.
//
// The tile state (the configuration and the 8 tile registers of palette 1) is
// per thread, as on hardware. What the hardware faults on aborts here with a
// message: a tile instruction on a thread whose tiles are not configured (or
// were released) or on a tile the configuration leaves empty (#UD), an invalid
// configuration (#GP), tdpbusd with shapes that do not match or with the same
// tile twice (#UD). Everything else follows the pseudo-code:
//   ldtilecfg    palette 0 is the INIT state; palette 1: 8 tiles of at most
//                16 rows x 64 bytes; reserved bytes and the entries of tiles
//                8..15 must be zero; a tile with rows or colsb 0 is not
//                configured; rows and colsb are set together; all tile
//                data is zeroed.
//   tileloadd    rows [start_row, rows) of colsb bytes from base + r * stride
//                (only those bytes are read); bytes past colsb and rows past
//                rows are zeroed.
//   tilestored   rows [start_row, rows) of colsb bytes to base + r * stride
//                (only those bytes are written).
//   tilezero     the whole tile is zeroed.
//   tdpbusd      C[m][n] += sum over k < A.colsb / 4 of the four products of
//                A's unsigned bytes 4k..4k+3 of row m with B's signed bytes
//                4n..4n+3 of row k, summed in a 32-bit temporary and added
//                to C, all wrapping; bytes of C past colsb and rows past rows
//                are zeroed.
//   tilerelease  back to the INIT state (no configuration, data zeroed).
// Every instruction that completes sets start_row to 0.
//
// Only what amx.cpp calls is here; a new intrinsic there fails to compile in
// this build until it is added.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tsb_amx_emulation {

constexpr int kTiles = 8;     // palette 1
constexpr int kMaxRows = 16;  // palette 1
constexpr int kMaxColsb = 64; // palette 1

struct State {
  bool configured = false;
  uint8_t start_row = 0;
  uint16_t colsb[kTiles] = {};
  uint8_t rows[kTiles] = {};
  uint8_t data[kTiles][kMaxRows][kMaxColsb] = {};
};

inline State& state() {
  thread_local State s;
  return s;
}

[[noreturn]] inline void fault(const char* what, int tile) {
  std::fprintf(stderr, "amx emulation: %s (tile %d)\n", what, tile);
  std::abort();
}

// A tile instruction's use of `tile`: #UD unless the thread's tiles are
// configured and this one has rows and columns.
inline void check_tile(int tile) {
  const State& s = state();
  if (tile < 0 || tile >= kTiles) fault("no such tile in palette 1", tile);
  if (!s.configured) fault("tile instruction without a loaded tile configuration (#UD)", tile);
  if (s.rows[tile] == 0 || s.colsb[tile] == 0) fault("tile not configured (#UD)", tile);
}

inline void release() {
  State& s = state();
  s = State{};
}

inline void loadconfig(const void* config) {
  uint8_t c[64];
  std::memcpy(c, config, sizeof(c));  // ldtilecfg reads 64 bytes
  const uint8_t palette = c[0];
  if (palette == 0) {
    release();
    return;
  }
  if (palette != 1) fault("unsupported palette (#GP)", -1);
  for (int i = 2; i < 16; ++i) {
    if (c[i] != 0) fault("reserved byte of the tile configuration is not zero (#GP)", -1);
  }
  State next;
  next.configured = true;
  next.start_row = c[1];
  for (int t = 0; t < 16; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, c + 16 + 2 * t, sizeof(colsb));
    const uint8_t rows = c[48 + t];
    if (t >= kTiles) {
      if (colsb != 0 || rows != 0) fault("tile beyond palette 1's 8 tiles is configured (#GP)", t);
      continue;
    }
    if (rows > kMaxRows || colsb > kMaxColsb) fault("tile shape beyond palette 1's limits (#GP)", t);
    if ((rows == 0) != (colsb == 0)) fault("tile has rows without columns or columns without rows (#GP)", t);
    next.rows[t] = rows;
    next.colsb[t] = colsb;
  }
  state() = next;
}

inline void tile_zero(int tile) {
  check_tile(tile);
  State& s = state();
  std::memset(s.data[tile], 0, sizeof(s.data[tile]));
  s.start_row = 0;
}

inline void tile_loadd(int tile, const void* base, int64_t stride) {
  check_tile(tile);
  State& s = state();
  const auto* p = static_cast<const uint8_t*>(base);
  for (int r = 0; r < kMaxRows; ++r) {
    uint8_t* row = s.data[tile][r];
    std::memset(row, 0, kMaxColsb);
    if (r >= s.start_row && r < s.rows[tile]) std::memcpy(row, p + r * stride, s.colsb[tile]);
  }
  s.start_row = 0;
}

inline void tile_stored(int tile, void* base, int64_t stride) {
  check_tile(tile);
  State& s = state();
  auto* p = static_cast<uint8_t*>(base);
  for (int r = s.start_row; r < s.rows[tile]; ++r) std::memcpy(p + r * stride, s.data[tile][r], s.colsb[tile]);
  s.start_row = 0;
}

inline void tile_dpbusd(int dst, int src1, int src2) {
  check_tile(dst);
  check_tile(src1);
  check_tile(src2);
  State& s = state();
  if (dst == src1 || dst == src2 || src1 == src2) fault("tdpbusd with the same tile twice (#UD)", dst);
  if (s.colsb[src1] % 4 != 0 || s.colsb[src2] % 4 != 0 || s.colsb[dst] % 4 != 0) {
    fault("tdpbusd on a tile whose colsb is not a multiple of 4 (#UD)", dst);
  }
  if (s.colsb[src1] / 4 != s.rows[src2]) fault("tdpbusd: A's colsb / 4 != B's rows (#UD)", src1);
  if (s.colsb[dst] != s.colsb[src2]) fault("tdpbusd: C's colsb != B's colsb (#UD)", dst);
  if (s.rows[dst] != s.rows[src1]) fault("tdpbusd: C's rows != A's rows (#UD)", dst);
  const int ka = s.colsb[src1] / 4, nc = s.colsb[dst] / 4;
  for (int m = s.start_row; m < s.rows[dst]; ++m) {
    uint32_t temp[kMaxColsb / 4] = {};
    for (int k = 0; k < ka; ++k) {
      for (int n = 0; n < nc; ++n) {
        for (int j = 0; j < 4; ++j) {
          const int32_t a = s.data[src1][m][4 * k + j];  // zero-extended
          const int32_t b = static_cast<int8_t>(s.data[src2][k][4 * n + j]);  // sign-extended
          temp[n] += static_cast<uint32_t>(a * b);
        }
      }
    }
    uint8_t* row = s.data[dst][m];
    for (int n = 0; n < nc; ++n) {
      uint32_t c;
      std::memcpy(&c, row + 4 * n, 4);
      c += temp[n];
      std::memcpy(row + 4 * n, &c, 4);
    }
    std::memset(row + s.colsb[dst], 0, kMaxColsb - s.colsb[dst]);
  }
  for (int m = s.rows[dst]; m < kMaxRows; ++m) std::memset(s.data[dst][m], 0, kMaxColsb);
  s.start_row = 0;
}

}  // namespace tsb_amx_emulation

#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbusd

#define _tile_loadconfig tsb_amx_emulation::loadconfig
#define _tile_release tsb_amx_emulation::release
#define _tile_zero(tile) tsb_amx_emulation::tile_zero(tile)
#define _tile_loadd(tile, base, stride) tsb_amx_emulation::tile_loadd(tile, base, stride)
#define _tile_stored(tile, base, stride) tsb_amx_emulation::tile_stored(tile, base, stride)
#define _tile_dpbusd(dst, src1, src2) tsb_amx_emulation::tile_dpbusd(dst, src1, src2)

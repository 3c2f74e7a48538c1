// Test-only: the AVX-512 (F, BW, VL, VNNI) intrinsics that csrc/kernels/avx512vnni.cpp
// uses and the AVX-VNNI one of csrc/kernels/avxvnni.cpp, written in portable
// C++ on GCC's generic vectors, so that the avx512vnni and avxvnni kernels'
// own code (layouts, loops, tails, masks, epilogues) runs and is checked on
// machines without those extensions.
//
// test/native/run.sh --x86-emulated compiles avx512vnni.cpp and avxvnni.cpp with
// -DTSB_X86_EMULATION='"<this file>"' (the kernels then target AVX2 only and
// include this header after <immintrin.h>) and runs the kernel test on them. Each function follows the instruction's definition in the Intel SDM,
// including the corner cases: masked-off bytes are neither read nor written,
// vpdpbusd wraps, vpmovusdb saturates the lanes as unsigned, min/max return
// the second operand when the comparison is false, and conversions round in
// the current rounding mode with 0x80000000 for unrepresentable values.
//
// Only what those files call is here; a new intrinsic there fails to compile
// in this build until it is added.
#pragma once

#include <immintrin.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>


namespace tsb_x86_emulation {

typedef int32_t v16si __attribute__((vector_size(64)));
typedef uint32_t v16su __attribute__((vector_size(64)));
typedef uint8_t v64qu __attribute__((vector_size(64)));
typedef int8_t v64qi __attribute__((vector_size(64)));
typedef float v16sf __attribute__((vector_size(64)));
typedef int32_t v8si __attribute__((vector_size(32)));
typedef uint8_t v32qu __attribute__((vector_size(32)));
typedef int8_t v32qi __attribute__((vector_size(32)));
typedef uint8_t v16qu __attribute__((vector_size(16)));

// cvtps2dq: round in the current mode; NaN and out-of-range give INT32_MIN.
inline int32_t convert_ps(float f) {
  const float r = std::nearbyint(f);
  if (!(r >= -2147483648.0f && r < 2147483648.0f)) return INT32_MIN;
  return static_cast<int32_t>(r);
}

inline __m512i set1_epi32(int32_t v) {
  v16si r;
  for (int i = 0; i < 16; ++i) r[i] = v;
  return reinterpret_cast<__m512i&>(r);
}
inline __m512i setzero_si512() { return set1_epi32(0); }
inline __m512i add_epi32(__m512i a, __m512i b) { return (__m512i)((v16su)a + (v16su)b); }
inline __m512i sub_epi32(__m512i a, __m512i b) { return (__m512i)((v16su)a - (v16su)b); }
inline __m512i load_si512(const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 64 != 0) std::abort();  // vmovdqa32 faults
  __m512i r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
inline __m512i loadu_si512(const void* p) {
  __m512i r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
// vmovdqa32 with zero masking: lane i of a where bit i of k is set, else 0.
inline __m512i maskz_mov_epi32(__mmask16 k, __m512i a) {
  v16su r = (v16su)a;
  for (int i = 0; i < 16; ++i) r[i] = ((k >> i) & 1) ? r[i] : 0u;
  return (__m512i)r;
}
inline __m512i castsi128_si512(__m128i a) {  // upper bytes undefined; zero here
  __m512i r = setzero_si512();
  std::memcpy(&r, &a, sizeof(a));
  return r;
}
// vbroadcasti64x4: the 32 bytes of a in both halves.
inline __m512i broadcast_i64x4(__m256i a) {
  __m512i r;
  std::memcpy(&r, &a, sizeof(a));
  std::memcpy(reinterpret_cast<char*>(&r) + 32, &a, sizeof(a));
  return r;
}
// vpermd: lane i is lane idx[i] & 15 of a; the higher bits of idx are ignored.
inline __m512i permutexvar_epi32(__m512i idx, __m512i a) {
  const v16su ta = (v16su)a, ti = (v16su)idx;
  v16su r;
  for (int i = 0; i < 16; ++i) r[i] = ta[ti[i] & 15u];
  return (__m512i)r;
}
// vpmovzxbd: the 16 bytes of a, zero-extended to 32-bit lanes.
inline __m512i cvtepu8_epi32(__m128i a) {
  const v16qu b = (v16qu)a;
  v16si r;
  for (int i = 0; i < 16; ++i) r[i] = b[i];
  return reinterpret_cast<__m512i&>(r);
}
// vpermt2d: lane i is lane idx[i] & 15 of a when bit 4 of idx[i] is clear,
// of b when it is set; the higher bits of idx are ignored.
inline __m512i permutex2var_epi32(__m512i a, __m512i idx, __m512i b) {
  const v16su ta = (v16su)a, tb = (v16su)b, ti = (v16su)idx;
  v16su r;
  for (int i = 0; i < 16; ++i) r[i] = (ti[i] & 16u) ? tb[ti[i] & 15u] : ta[ti[i] & 15u];
  return (__m512i)r;
}
inline void store_si512(void* p, __m512i a) {
  if (reinterpret_cast<uintptr_t>(p) % 64 != 0) std::abort();
  std::memcpy(p, &a, sizeof(a));
}
inline __m256i castsi512_si256(__m512i a) {
  __m256i r;
  std::memcpy(&r, &a, sizeof(r));
  return r;
}
inline __m512i castsi256_si512(__m256i a) {  // upper half undefined; zero here
  __m512i r = setzero_si512();
  std::memcpy(&r, &a, sizeof(a));
  return r;
}
inline __m256i extracti64x4_epi64(__m512i a, int imm) {
  __m256i r;
  std::memcpy(&r, reinterpret_cast<const char*>(&a) + 32 * (imm & 1), sizeof(r));
  return r;
}
inline __m512i inserti64x4(__m512i a, __m256i b, int imm) {
  std::memcpy(reinterpret_cast<char*>(&a) + 32 * (imm & 1), &b, sizeof(b));
  return a;
}
// vpmovusdb: each lane as an unsigned 32-bit value, saturated to 0..255.
inline __m128i cvtusepi32_epi8(__m512i a) {
  const v16su u = (v16su)a;
  v16qu r;
  for (int i = 0; i < 16; ++i) r[i] = static_cast<uint8_t>(u[i] > 255u ? 255u : u[i]);
  return reinterpret_cast<__m128i&>(r);
}
// vpdpbusd: per 32-bit lane, acc + the four products of unsigned bytes of u
// and signed bytes of s, wrapping (the form without saturation).
template <class V, class Vb, int kLanes>
inline V dpbusd(V acc, V u, V s) {
  Vb ub, sb;
  std::memcpy(&ub, &u, sizeof(u));
  std::memcpy(&sb, &s, sizeof(s));
  uint32_t lanes[kLanes];
  std::memcpy(lanes, &acc, sizeof(acc));
  for (int i = 0; i < kLanes; ++i) {
    for (int j = 0; j < 4; ++j) {
      const int32_t product = int32_t{static_cast<uint8_t>(ub[4 * i + j])} * int32_t{static_cast<int8_t>(sb[4 * i + j])};
      lanes[i] += static_cast<uint32_t>(product);
    }
  }
  std::memcpy(&acc, lanes, sizeof(acc));
  return acc;
}
inline __m512i dpbusd_epi32(__m512i acc, __m512i u, __m512i s) { return dpbusd<__m512i, v64qu, 16>(acc, u, s); }
inline __m256i dpbusd_epi32_256(__m256i acc, __m256i u, __m256i s) {
  return dpbusd<__m256i, v32qu, 8>(acc, u, s);
}  // also the VEX form, _mm256_dpbusd_avx_epi32

inline __m512 set1_ps(float v) {
  v16sf r;
  for (int i = 0; i < 16; ++i) r[i] = v;
  return reinterpret_cast<__m512&>(r);
}
inline __m512 setzero_ps() { return set1_ps(0.0f); }
inline __m512 loadu_ps(const float* p) {
  __m512 r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
inline __m512 mul_ps(__m512 a, __m512 b) { return (__m512)((v16sf)a * (v16sf)b); }
inline __m512 add_ps(__m512 a, __m512 b) { return (__m512)((v16sf)a + (v16sf)b); }
// vmaxps/vminps: the first operand where the comparison holds, else the second.
inline __m512 max_ps(__m512 a, __m512 b) {
  const v16sf x = (v16sf)a, y = (v16sf)b;
  v16sf r;
  for (int i = 0; i < 16; ++i) r[i] = x[i] > y[i] ? x[i] : y[i];
  return (__m512)r;
}
inline __m512 min_ps(__m512 a, __m512 b) {
  const v16sf x = (v16sf)a, y = (v16sf)b;
  v16sf r;
  for (int i = 0; i < 16; ++i) r[i] = x[i] < y[i] ? x[i] : y[i];
  return (__m512)r;
}
inline __m512 abs_ps(__m512 a) { return (__m512)((v16su)a & 0x7fffffffu); }
inline __m512i castps_si512(__m512 a) { return (__m512i)a; }
inline __m512 cvtepi32_ps(__m512i a) {
  const v16si x = (v16si)a;
  v16sf r;
  for (int i = 0; i < 16; ++i) r[i] = static_cast<float>(x[i]);
  return (__m512)r;
}
inline __m512i cvtps_epi32(__m512 a) {
  const v16sf x = (v16sf)a;
  v16si r;
  for (int i = 0; i < 16; ++i) r[i] = convert_ps(x[i]);
  return (__m512i)r;
}
// vrndscaleps with scale 0 only; imm bit 2 selects the current rounding mode.
inline __m512 roundscale_ps(__m512 a, int imm) {
  if ((imm >> 4) != 0) std::abort();
  const v16sf x = (v16sf)a;
  v16sf r;
  const int saved = std::fegetround();
  if (!(imm & 4)) {
    static const int modes[4] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};
    std::fesetround(modes[imm & 3]);
  }
  for (int i = 0; i < 16; ++i) r[i] = std::nearbyint(x[i]);
  std::fesetround(saved);
  return (__m512)r;
}
inline float reduce_min_ps(__m512 a) {
  const v16sf x = (v16sf)a;
  float r = x[0];
  for (int i = 1; i < 16; ++i) r = x[i] < r ? x[i] : r;
  return r;
}
inline float reduce_max_ps(__m512 a) {
  const v16sf x = (v16sf)a;
  float r = x[0];
  for (int i = 1; i < 16; ++i) r = x[i] > r ? x[i] : r;
  return r;
}
inline __mmask16 cmp_ps_mask(__m512 a, __m512 b, int predicate) {
  if (predicate != _CMP_LT_OQ && predicate != _CMP_LT_OS) std::abort();
  const v16sf x = (v16sf)a, y = (v16sf)b;
  __mmask16 k = 0;
  for (int i = 0; i < 16; ++i) k = static_cast<__mmask16>(k | (x[i] < y[i] ? 1u << i : 0u));
  return k;
}

// Masked loads and stores touch only the bytes whose mask bit is set (the
// instructions suppress faults on the others).
template <class V, int kElems, int kSize>
inline V maskz_load(uint64_t k, const void* p) {
  unsigned char bytes[sizeof(V)] = {};
  for (int i = 0; i < kElems; ++i) {
    if ((k >> i) & 1) std::memcpy(bytes + kSize * i, static_cast<const char*>(p) + kSize * i, kSize);
  }
  V r;
  std::memcpy(&r, bytes, sizeof(r));
  return r;
}
template <class V, int kElems, int kSize>
inline void mask_store(void* p, uint64_t k, V a) {
  for (int i = 0; i < kElems; ++i) {
    if ((k >> i) & 1) std::memcpy(static_cast<char*>(p) + kSize * i, reinterpret_cast<const char*>(&a) + kSize * i, kSize);
  }
}
inline __m256i maskz_loadu_epi8_256(__mmask32 k, const void* p) { return maskz_load<__m256i, 32, 1>(k, p); }
inline __m256i maskz_loadu_epi32_256(__mmask8 k, const void* p) { return maskz_load<__m256i, 8, 4>(k, p); }
inline __m128i maskz_loadu_epi8_128(__mmask16 k, const void* p) { return maskz_load<__m128i, 16, 1>(k, p); }
inline void mask_storeu_ps_256(void* p, __mmask8 k, __m256 a) { mask_store<__m256, 8, 4>(p, k, a); }
inline void mask_storeu_epi8_128(void* p, __mmask16 k, __m128i a) { mask_store<__m128i, 16, 1>(p, k, a); }

}  // namespace tsb_x86_emulation

// Some of these are macros in <immintrin.h> without optimization.
#undef _mm512_set1_epi32
#undef _mm512_setzero_si512
#undef _mm512_add_epi32
#undef _mm512_sub_epi32
#undef _mm512_load_si512
#undef _mm512_loadu_si512
#undef _mm512_cvtepu8_epi32
#undef _mm512_castsi128_si512
#undef _mm512_broadcast_i64x4
#undef _mm512_permutexvar_epi32
#undef _mm512_maskz_mov_epi32
#undef _mm512_permutex2var_epi32
#undef _mm512_store_si512
#undef _mm512_castsi512_si256
#undef _mm512_castsi256_si512
#undef _mm512_extracti64x4_epi64
#undef _mm512_inserti64x4
#undef _mm512_cvtusepi32_epi8
#undef _mm512_dpbusd_epi32
#undef _mm256_dpbusd_epi32
#undef _mm256_dpbusd_avx_epi32
#undef _mm512_set1_ps
#undef _mm512_setzero_ps
#undef _mm512_loadu_ps
#undef _mm512_mul_ps
#undef _mm512_add_ps
#undef _mm512_max_ps
#undef _mm512_min_ps
#undef _mm512_abs_ps
#undef _mm512_castps_si512
#undef _mm512_cvtepi32_ps
#undef _mm512_cvtps_epi32
#undef _mm512_roundscale_ps
#undef _mm512_reduce_min_ps
#undef _mm512_reduce_max_ps
#undef _mm512_cmp_ps_mask
#undef _mm256_maskz_loadu_epi8
#undef _mm256_maskz_loadu_epi32
#undef _mm_maskz_loadu_epi8
#undef _mm256_mask_storeu_ps
#undef _mm_mask_storeu_epi8

#define _mm512_set1_epi32 tsb_x86_emulation::set1_epi32
#define _mm512_setzero_si512 tsb_x86_emulation::setzero_si512
#define _mm512_add_epi32 tsb_x86_emulation::add_epi32
#define _mm512_sub_epi32 tsb_x86_emulation::sub_epi32
#define _mm512_load_si512 tsb_x86_emulation::load_si512
#define _mm512_loadu_si512 tsb_x86_emulation::loadu_si512
#define _mm512_cvtepu8_epi32 tsb_x86_emulation::cvtepu8_epi32
#define _mm512_castsi128_si512 tsb_x86_emulation::castsi128_si512
#define _mm512_broadcast_i64x4 tsb_x86_emulation::broadcast_i64x4
#define _mm512_permutexvar_epi32 tsb_x86_emulation::permutexvar_epi32
#define _mm512_maskz_mov_epi32 tsb_x86_emulation::maskz_mov_epi32
#define _mm512_permutex2var_epi32 tsb_x86_emulation::permutex2var_epi32
#define _mm512_store_si512 tsb_x86_emulation::store_si512
#define _mm512_castsi512_si256 tsb_x86_emulation::castsi512_si256
#define _mm512_castsi256_si512 tsb_x86_emulation::castsi256_si512
#define _mm512_extracti64x4_epi64 tsb_x86_emulation::extracti64x4_epi64
#define _mm512_inserti64x4 tsb_x86_emulation::inserti64x4
#define _mm512_cvtusepi32_epi8 tsb_x86_emulation::cvtusepi32_epi8
#define _mm512_dpbusd_epi32 tsb_x86_emulation::dpbusd_epi32
#define _mm256_dpbusd_epi32 tsb_x86_emulation::dpbusd_epi32_256
#define _mm256_dpbusd_avx_epi32 tsb_x86_emulation::dpbusd_epi32_256
#define _mm512_set1_ps tsb_x86_emulation::set1_ps
#define _mm512_setzero_ps tsb_x86_emulation::setzero_ps
#define _mm512_loadu_ps tsb_x86_emulation::loadu_ps
#define _mm512_mul_ps tsb_x86_emulation::mul_ps
#define _mm512_add_ps tsb_x86_emulation::add_ps
#define _mm512_max_ps tsb_x86_emulation::max_ps
#define _mm512_min_ps tsb_x86_emulation::min_ps
#define _mm512_abs_ps tsb_x86_emulation::abs_ps
#define _mm512_castps_si512 tsb_x86_emulation::castps_si512
#define _mm512_cvtepi32_ps tsb_x86_emulation::cvtepi32_ps
#define _mm512_cvtps_epi32 tsb_x86_emulation::cvtps_epi32
#define _mm512_roundscale_ps tsb_x86_emulation::roundscale_ps
#define _mm512_reduce_min_ps tsb_x86_emulation::reduce_min_ps
#define _mm512_reduce_max_ps tsb_x86_emulation::reduce_max_ps
#define _mm512_cmp_ps_mask tsb_x86_emulation::cmp_ps_mask
#define _mm256_maskz_loadu_epi8 tsb_x86_emulation::maskz_loadu_epi8_256
#define _mm256_maskz_loadu_epi32 tsb_x86_emulation::maskz_loadu_epi32_256
#define _mm_maskz_loadu_epi8 tsb_x86_emulation::maskz_loadu_epi8_128
#define _mm256_mask_storeu_ps tsb_x86_emulation::mask_storeu_ps_256
#define _mm_mask_storeu_epi8 tsb_x86_emulation::mask_storeu_epi8_128

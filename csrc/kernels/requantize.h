// Scalar epilogues shared by every kernel variant's tails and by the reference
// kernel. Vector epilogues must produce the same bits (see sparse_core.h).
#pragma once

#include <cmath>
#include <cstdint>

namespace tsb {

inline uint8_t requantize_fbgemm_compatible(int32_t acc, float bias_scaled,
                                            float requant_scale, int32_t y_zp,
                                            int32_t qmin, int32_t qmax) {
  float v = (static_cast<float>(acc) + bias_scaled) * requant_scale;
  // Clamping before rounding equals rounding before clamping (the bounds are
  // integers) and keeps the float -> int conversion in range.
  const float lo = static_cast<float>(qmin - y_zp);
  const float hi = static_cast<float>(qmax - y_zp);
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  return static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(v)) + y_zp);
}

// Returns v unchanged, but the compiler can no longer fuse the operation that
// produced v with the one that consumes it into a multiply-add, whatever the
// -ffp-contract setting.
inline float separately_rounded(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float barrier = v;
  v = barrier;
#endif
  return v;
}

// Dequantizing epilogue of the dynamic op. `relu` keeps y when y > 0 and gives
// +0.0 otherwise (also for -0.0), which is what x86 `maxps(y, 0)` computes.
inline float dequantize_output(int32_t acc, float dequant_scale, float bias, bool relu) {
  float y = static_cast<float>(acc) * dequant_scale;
  y = separately_rounded(y);
  y = y + bias;
  if (relu) y = y > 0.f ? y : 0.f;
  return y;
}

}  // namespace tsb

// What each x86 kernel variant file puts around the code it compiles for its
// ISA:
//
//   #include "x86_target.h"
//   TSB_TARGET_BEGIN("avx2")
//   ... kernels (x86_common.h, ...) ...
//   TSB_TARGET_END
//
// The region is `#pragma GCC target` for GCC and `#pragma clang attribute`
// (a target attribute on every function defined inside) for Clang, which
// ignores the former. The system headers come first, outside the region:
// functions declared there keep the baseline ISA (the intrinsics carry their
// own targets); only the kernels' own functions take the variant's.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#define TSB_PRAGMA_STR(x) #x
#if defined(__clang__)
#define TSB_TARGET_BEGIN(isa) \
  _Pragma(TSB_PRAGMA_STR(clang attribute push(__attribute__((target(isa))), apply_to = function)))
#define TSB_TARGET_END _Pragma("clang attribute pop")
#else
#define TSB_TARGET_BEGIN(isa) _Pragma("GCC push_options") _Pragma(TSB_PRAGMA_STR(GCC target(isa)))
#define TSB_TARGET_END _Pragma("GCC pop_options")
#endif

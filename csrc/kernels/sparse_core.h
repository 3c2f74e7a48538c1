// Kernel core of torch_sparse_backend: block-sparse int8 linear on raw pointers.
//
// Nothing in csrc/kernels includes a torch header. The op layer (csrc/ops.cpp)
// turns tensors into pointers, checks every input, and calls into this core;
// the standalone drivers in test/native compile the same files without torch,
// for x86 and, cross-compiled, for aarch64 under emulation.
//
// Glossary (each word means this and only this in csrc/kernels):
//   weight          N x K int8, N output channels ("channels"), K input columns.
//   block shape     rb x cb: the weight is stored in rb-channel by cb-column
//                   blocks (torch's sparse_block_shape / row_block_size,
//                   col_block_size); a block is stored when any value is nonzero.
//   BcsrMatrix      the canonical block-compressed-sparse-row form (below):
//                   what is serialized and what every variant packs from.
//   kernel variant  one implementation of the kernels for one ISA ("reference",
//                   "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neondot"); a
//                   variant's packed form of one weight is its "plan".
//   tile            the group of output channels a variant computes together
//                   and the unit in which the op layer splits work between
//                   threads: 8 channels (avx2, avxvnni, avx512vnni column
//                   quads), 16 (avx512vnni quad slots, amx), max(rb, 4) (neon).
//   quad            4 consecutive input columns 4q .. 4q+3, one 32-bit word
//                   of activations, one multiply-accumulate lane (vpdpbusd,
//                   sdot).
//   piece           one channel's 4 weights on one quad (x86 layouts).
//   Packed layouts (x86_layouts.h, neon.cpp):
//     QuadRows      per channel, its pieces in quad order (avx2, avxvnni).
//     QuadSlots     per tile of 16 channels, "steps" of one piece per channel
//                   ("slot"), each step within one 128-column "window"
//                   (windows start every 64 columns; avx512vnni).
//     ColumnQuads   per tile of 8 channels, "entries" of 4 nonzero input
//                   columns with the 8 channels' weights there (rb >= 8,
//                   cb <= 2 on x86).
//     neon quads    per block row, the rb x 4 weights at 4 input positions
//                   (neon.cpp).
//   batch buffer    a variant's per-call re-layout of several activation rows
//                   (rows interleaved per quad or per column), built in
//                   per-thread scratch.
//
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tsb {

// Largest K for which the int32 accumulator is exact for any inputs:
// |x - x_zp| <= 255 and |w| <= 128, so K * 255 * 128 must stay below 2^31.
constexpr int64_t kMaxInFeatures = 65793;

// Largest N accepted. It bounds what a (possibly hostile) serialized state can
// make the loader allocate per output channel.
constexpr int64_t kMaxOutFeatures = int64_t{1} << 24;

// Block sizes accepted along either axis.
inline bool is_supported_block_size(int64_t b) {
  return b == 1 || b == 2 || b == 4 || b == 8 || b == 16;
}

// Canonical block-compressed-sparse-row weight. This is the ISA-independent
// form: it is what is serialized, what unpack reads back, and what every
// kernel variant builds its own layout from.
//
// The weight is N x K (out_features x in_features), int8, split into rb x cb
// blocks; N and K are padded up to multiples of rb and cb with zeros. Block row
// r (output channels r*rb .. r*rb+rb-1) holds the blocks
// row_ptr[r] .. row_ptr[r+1]-1; block j covers input columns
// col_idx[j]*cb .. col_idx[j]*cb+cb-1 and its values are
// values[j*rb*cb .. (j+1)*rb*cb-1], row-major within the block.
struct BcsrMatrix {
  int64_t N = 0;
  int64_t K = 0;
  int64_t rb = 1;
  int64_t cb = 1;
  std::vector<int32_t> row_ptr;  // block_rows() + 1 entries
  std::vector<int32_t> col_idx;  // one per stored block, strictly increasing per row
  std::vector<int8_t> values;    // rb * cb per stored block

  int64_t block_rows() const { return (N + rb - 1) / rb; }
  int64_t block_cols() const { return (K + cb - 1) / cb; }
  int64_t padded_n() const { return block_rows() * rb; }
  int64_t padded_k() const { return block_cols() * cb; }
  int64_t num_blocks() const { return static_cast<int64_t>(col_idx.size()); }
};

// Packs a dense row-major N x K int8 weight. A block is stored if any of its
// values is nonzero. Sizes and block shape must already be valid
// (check_shape returns "").
BcsrMatrix pack_bcsr(const int8_t* w, int64_t N, int64_t K, int64_t rb, int64_t cb);

// Writes the dense N x K weight that `m` represents into `w`.
void unpack_bcsr(const BcsrMatrix& m, int8_t* w);

// "" when (N, K, rb, cb) can be packed, otherwise a message naming the problem.
std::string check_shape(int64_t N, int64_t K, int64_t rb, int64_t cb);

// Full structural validation of a matrix that came from outside (a file):
// sizes, block shape, row_ptr monotone and consistent, column indices in range
// and strictly increasing, value count, and zeros in the padding. "" when valid.
std::string validate_bcsr(const BcsrMatrix& m);

// Per-output-channel sums of the weight, used to remove the activation zero point:
// sum_k (x[k] - x_zp) * w[k] = sum_k x[k] * w[k] - x_zp * row_sum.
std::vector<int32_t> row_sums(const BcsrMatrix& m);

// The reference activation quantization (see KernelPlan::quantize_activations).
void quantize_activations_reference(const float* x, int64_t n, float inv_scale, int32_t zp,
                                    uint8_t* q);

// The reference range scan (see KernelPlan::finite_min_max).
bool finite_min_max_reference(const float* x, int64_t n, float* lo, float* hi);

struct StaticArgs {
  const uint8_t* x = nullptr;  // M rows, row stride ldx; padded_k() columns readable
  int64_t ldx = 0;
  int32_t x_zero_point = 0;
  uint8_t* y = nullptr;  // M rows, row stride ldy; N columns written
  int64_t ldy = 0;
  const float* requant_scale = nullptr;  // [padded_n()]
  const float* bias_scaled = nullptr;    // [padded_n()]
  int32_t y_zero_point = 0;
  int32_t qmin = 0;
  int32_t qmax = 255;
};

struct DynamicArgs {
  const uint8_t* x = nullptr;  // as StaticArgs::x
  int64_t ldx = 0;
  int32_t x_zero_point = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  const float* dequant_scale = nullptr;  // [padded_n()]
  const float* bias = nullptr;           // [padded_n()], zeros when the layer has none
  bool relu = false;
};

// A kernel variant's prepared weight. Immutable after construction, so one
// plan may run from many threads at once. Work is split into "tiles": groups
// of output channels that the variant computes together; run_* computes
// rows [m_begin, m_end) of the output for tiles [t_begin, t_end).
class KernelPlan {
 public:
  virtual ~KernelPlan() = default;
  virtual const char* name() const = 0;
  virtual int64_t num_tiles() const = 0;
  // The work of tiles [0, t) for t in [0, num_tiles()], nondecreasing in t, in
  // any unit proportional to run time (stored pieces, steps, entries): the op
  // layer gives each thread a tile range of equal work, not of equal count.
  virtual int64_t work_before(int64_t t) const { return t; }
  // Bytes of packed weight data this plan holds (indices, values, row sums).
  virtual size_t packed_bytes() const = 0;
  virtual void run_static(const StaticArgs& a, int64_t m_begin, int64_t m_end,
                          int64_t t_begin, int64_t t_end) const = 0;
  virtual void run_dynamic(const DynamicArgs& a, int64_t m_begin, int64_t m_end,
                           int64_t t_begin, int64_t t_end) const = 0;
  // Activation quantization of the dynamic op, with this variant's vector unit:
  // q[i] = clamp(nearbyint(x[i] * inv_scale) + zp, 0, 255), x finite.
  virtual void quantize_activations(const float* x, int64_t n, float inv_scale, int32_t zp,
                                    uint8_t* q) const {
    quantize_activations_reference(x, n, inv_scale, zp, q);
  }
  // Range of the dynamic op's input: *lo = min and *hi = max of x[0..n), n >= 1.
  // Returns false (leaving *lo and *hi unspecified) when any value is NaN or
  // infinite. Min and max are exact, so every variant finds the same values
  // (up to the sign of a zero, which the activation qparams do not depend on).
  virtual bool finite_min_max(const float* x, int64_t n, float* lo, float* hi) const {
    return finite_min_max_reference(x, n, lo, hi);
  }
};

// CPU features that select a kernel variant. Dispatch does not detect them: it
// chooses from the features it is given.
struct CpuFeatures {
  bool avx2 = false;
  bool avx512bw = false;
  bool avx512vnni = false;
  bool avx_vnni = false;  // AVX-VNNI: the VEX-encoded vpdpbusd
  // AMX-TILE and AMX-INT8, each true only when the OS also lets this process
  // use the tile data (see amx_tile_data_granted in kernel_registry.h).
  bool amx_tile = false;
  bool amx_int8 = false;
  bool neon = false;
  bool neon_dot = false;
};

// The features as the CPU and the OS report them, without torch
// (cpu_report.cpp): CPUID, and the OS's grant of the AMX tile data, on x86-64;
// HWCAP on aarch64 Linux. Features it cannot tell stay false. The op layer
// (csrc/cpu.cpp) combines them with ATen's cpuinfo; the torch-free test and
// benchmark programs use them as they are.
CpuFeatures cpu_features_reported();

// Variants compiled into this build, best first, ending with "reference".
const std::vector<std::string>& compiled_variants();

// True when `variant` is compiled in and the CPU described by `f` can run it.
bool can_run(const std::string& variant, const CpuFeatures& f);

// The best variant for `f`, or `forced` when it is not empty ("" -> best).
// Returns "" and sets *error (when `error` is not null) when `forced` is
// unknown or cannot run on a CPU with `f`.
std::string select_variant(const CpuFeatures& f, const std::string& forced,
                           std::string* error);

// Builds `variant`'s plan for `m` (validated). The plan may read `m` when it
// runs, so `m` must outlive it and stay unchanged. Throws
// std::invalid_argument for an unknown variant.
std::unique_ptr<KernelPlan> make_plan(const BcsrMatrix& m, const std::string& variant);

}  // namespace tsb

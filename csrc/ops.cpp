// Operator layer: schemas, the TorchScript class, input checks, threading.
// Tensors become raw pointers here; the kernel core never sees torch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/quantized/cpu/QuantUtils.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>

#include "cpu.h"
#include "packed_params.h"

namespace tsb {
namespace {

using Packed = c10::intrusive_ptr<SparseLinearPackedParams>;

// Output channels' tiles are split across threads. Below this many
// multiply-adds one thread does the whole product: waking a second thread for
// a few microseconds of work costs more than the work it takes over.
constexpr int64_t kMinParallelWork = int64_t{1} << 18;

void check_input_rank(const at::Tensor& X, const SparseLinearPackedParams& p, const char* op) {
  TORCH_CHECK_VALUE(X.device().is_cpu(), op, ": input must be on the CPU, got ", X.device());
  TORCH_CHECK_TYPE(X.layout() == at::kStrided, op, ": input must be a dense (strided) tensor, got ",
                   X.layout());
  TORCH_CHECK_VALUE(X.dim() >= 1, op, ": input must have at least one dimension");
  TORCH_CHECK_VALUE(X.size(-1) == p.in_features(), op, ": input has ", X.size(-1),
                    " features in its last dimension but the weight has in_features=",
                    p.in_features());
}

// Per-thread scratch of the calling thread, reused from call to call so that
// a call allocates nothing but its output. The op's worker threads only read
// it or write disjoint parts while the caller waits in at::parallel_for.
// One buffer per element type.
template <class T>
T* call_scratch(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

std::vector<int64_t> output_sizes(const at::Tensor& X, int64_t N) {
  std::vector<int64_t> s(X.sizes().begin(), X.sizes().end());
  s.back() = N;
  return s;
}

// Rows of `x` (M x K, contiguous) with the row stride the kernels read:
// padded_k() columns. Copies only when K is not a multiple of the block width;
// the padding columns meet zero weights, their value is `fill`.
at::Tensor padded_rows(const at::Tensor& x, int64_t M, int64_t K, int64_t Kp, uint8_t fill) {
  at::Tensor out = at::empty({M, Kp}, at::kByte);
  const uint8_t* src = static_cast<const uint8_t*>(x.data_ptr());
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(dst + m * Kp, src + m * K, K);
    std::memset(dst + m * Kp + K, fill, Kp - K);
  }
  return out;
}

// Runs fn(plan, t0, t1) over the plan's tiles: on the calling thread when the
// product is small, else as one tile range per intra-op thread, the ranges
// cut where the plan's work (not its tile count) is split evenly.
template <typename Fn>
void for_each_tile_range(const SparseLinearPackedParams& p, int64_t M, const Fn& fn) {
  const KernelPlan& plan = p.plan();
  const int64_t T = plan.num_tiles();
  const BcsrMatrix& w = p.weight();
  const int64_t work = w.num_blocks() * w.rb * w.cb * M;
  const int64_t parts = std::min<int64_t>(T, at::get_num_threads());
  if (work < kMinParallelWork || parts <= 1 || at::in_parallel_region()) {
    fn(plan, 0, T);
    return;
  }
  const int64_t total = plan.work_before(T);
  // The first tile t whose work_before(t) reaches part i's share.
  auto boundary = [&](int64_t i) {
    if (i >= parts) return T;
    const int64_t target = total / parts * i + total % parts * i / parts;
    int64_t lo = 0, hi = T;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (plan.work_before(mid) < target) lo = mid + 1; else hi = mid;
    }
    return lo;
  };
  at::parallel_for(0, parts, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t0 = boundary(i), t1 = boundary(i + 1);
      if (t0 < t1) fn(plan, t0, t1);
    }
  });
}

// The static product of activation rows X (uint8 values in quint8 or uint8
// storage) with explicit qparams, requantized into y (M x N uint8).
void run_static_product(const at::Tensor& X, double x_scale, int64_t x_zp,
                        const SparseLinearPackedParams& p, double y_scale, int64_t y_zero_point,
                        bool relu, uint8_t* y, const char* op) {
  const BcsrMatrix& w = p.weight();
  const int64_t K = w.K, N = w.N, Kp = w.padded_k();
  const int64_t M = X.numel() / K;

  const auto scales = p.static_scales(static_cast<float>(x_scale), static_cast<float>(y_scale), op,
                                      x_scale, y_scale);
  if (M == 0) return;

  at::Tensor x = X.contiguous();
  if (Kp != K) x = padded_rows(x, M, K, Kp, static_cast<uint8_t>(x_zp));
  StaticArgs a;
  a.x = static_cast<const uint8_t*>(x.data_ptr());
  a.ldx = Kp;
  a.x_zero_point = static_cast<int32_t>(x_zp);
  a.y = y;
  a.ldy = N;
  a.requant_scale = scales->requant.data();
  a.bias_scaled = scales->bias_scaled.data();
  a.y_zero_point = static_cast<int32_t>(y_zero_point);
  a.qmin = relu ? a.y_zero_point : 0;
  a.qmax = 255;
  for_each_tile_range(p, M, [&](const KernelPlan& plan, int64_t t0, int64_t t1) {
    plan.run_static(a, 0, M, t0, t1);
  });
}

void check_static_qparams(double x_scale, int64_t x_zp, double y_scale, int64_t y_zero_point,
                          const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(y_scale) && y_scale > 0 &&
                        static_cast<float>(y_scale) > 0 &&
                        std::isfinite(static_cast<float>(y_scale)),
                    op, ": output scale must be finite and positive, got ", y_scale);
  TORCH_CHECK_VALUE(y_zero_point >= 0 && y_zero_point <= 255, op,
                    ": output zero point must be in [0, 255], got ", y_zero_point);
  TORCH_CHECK_VALUE(std::isfinite(x_scale) && x_scale > 0, op,
                    ": input scale must be finite and positive, got ", x_scale);
  TORCH_CHECK_VALUE(x_zp >= 0 && x_zp <= 255, op,
                    ": input zero point must be in [0, 255], got ", x_zp);
}

at::Tensor qlinear_static(const at::Tensor& X, const Packed& packed, double y_scale,
                          int64_t y_zero_point, bool relu, const char* op) {
  const SparseLinearPackedParams& p = *packed;
  TORCH_CHECK_TYPE(X.is_quantized() && X.scalar_type() == at::kQUInt8, op,
                   ": input must be a quantized tensor of dtype torch.quint8, got ",
                   X.is_quantized() ? c10::toString(X.scalar_type())
                                    : "an unquantized " +
                                          std::string(c10::toString(X.scalar_type())) +
                                          " tensor (use qlinear_dynamic for float input)");
  TORCH_CHECK_VALUE(X.qscheme() == at::kPerTensorAffine, op,
                    ": input must be quantized per tensor, got ", c10::toString(X.qscheme()));
  check_input_rank(X, p, op);
  check_static_qparams(X.q_scale(), X.q_zero_point(), y_scale, y_zero_point, op);
  at::Tensor Y = at::_empty_affine_quantized(output_sizes(X, p.out_features()),
                                             at::device(at::kCPU).dtype(at::kQUInt8), y_scale,
                                             y_zero_point);
  run_static_product(X, X.q_scale(), X.q_zero_point(), p, y_scale, y_zero_point, relu,
                     reinterpret_cast<uint8_t*>(Y.data_ptr<c10::quint8>()), op);
  return Y;
}

at::Tensor qlinear_static_uint8(const at::Tensor& X, double x_scale, int64_t x_zero_point,
                                const Packed& packed, double y_scale, int64_t y_zero_point,
                                bool relu, const char* op) {
  const SparseLinearPackedParams& p = *packed;
  TORCH_CHECK_TYPE(!X.is_quantized() && X.scalar_type() == at::kByte, op,
                   ": input must be a uint8 tensor, got ",
                   X.is_quantized() ? "a quantized " + std::string(c10::toString(X.scalar_type())) +
                                          " tensor (use qlinear for quantized input)"
                                    : c10::toString(X.scalar_type()));
  check_input_rank(X, p, op);
  check_static_qparams(x_scale, x_zero_point, y_scale, y_zero_point, op);
  at::Tensor Y = at::empty(output_sizes(X, p.out_features()), at::kByte);
  run_static_product(X, x_scale, x_zero_point, p, y_scale, y_zero_point, relu,
                     Y.data_ptr<uint8_t>(), op);
  return Y;
}

at::Tensor qlinear_dynamic_impl(const at::Tensor& X, const Packed& packed, bool relu,
                                const char* op) {
  const SparseLinearPackedParams& p = *packed;
  TORCH_CHECK_TYPE(!X.is_quantized() && X.scalar_type() == at::kFloat, op,
                   ": input must be a float32 tensor, got ",
                   X.is_quantized() ? "a quantized " + std::string(c10::toString(X.scalar_type())) +
                                          " tensor (use qlinear for quantized input)"
                                    : c10::toString(X.scalar_type()));
  check_input_rank(X, p, op);
  const BcsrMatrix& w = p.weight();
  const int64_t K = w.K, N = w.N, Kp = w.padded_k(), Np = w.padded_n();
  const int64_t M = X.numel() / K;
  at::Tensor Y = at::empty(output_sizes(X, N), at::kFloat);
  if (M == 0) return Y;

  const at::Tensor x = X.contiguous();
  const float* xf = x.data_ptr<float>();
  const KernelPlan& plan = p.plan();
  float x_min = 0.f, x_max = 0.f;
  TORCH_CHECK_VALUE(plan.finite_min_max(xf, M * K, &x_min, &x_max), op,
                    ": input contains NaN or infinity; dynamic quantization needs finite "
                    "values");
  // Activation qparams exactly as torch's dense quantized::linear_dynamic
  // with reduce_range=False.
  const auto q = quant_utils::ChooseQuantizationParams(x_min, x_max, 0, 255,
                                                       /*preserve_sparsity=*/false,
                                                       /*force_scale_power_of_two=*/false,
                                                       /*reduce_range=*/false);
  const float xs = static_cast<float>(q.scale);
  const int32_t x_zp = q.zero_point;

  uint8_t* xq_ptr = call_scratch<uint8_t>(M * Kp);
  const float inv_scale = 1.0f / xs;
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / K), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      plan.quantize_activations(xf + m * K, K, inv_scale, x_zp, xq_ptr + m * Kp);
      std::memset(xq_ptr + m * Kp + K, x_zp, Kp - K);
    }
  });

  float* dequant = call_scratch<float>(Np);
  const std::vector<float>& ws = p.weight_scales();
  for (int64_t n = 0; n < Np; ++n) dequant[n] = xs * ws[n];

  DynamicArgs a;
  a.x = xq_ptr;
  a.ldx = Kp;
  a.x_zero_point = x_zp;
  a.y = Y.data_ptr<float>();
  a.ldy = N;
  a.dequant_scale = dequant;
  a.bias = p.bias_values().data();
  a.relu = relu;
  for_each_tile_range(p, M, [&](const KernelPlan& pl, int64_t t0, int64_t t1) {
    pl.run_dynamic(a, 0, M, t0, t1);
  });
  return Y;
}

// The schemas name the block shape (rb, cb) as torch's sparse::qlinear_prepack
// does: out_features_block_size, in_features_block_size.
Packed qlinear_prepack(const at::Tensor& W, const std::optional<at::Tensor>& B, int64_t rb,
                       int64_t cb) {
  return SparseLinearPackedParams::prepack(W, B, rb, cb);
}

Packed qlinear_prepack_int8(const at::Tensor& W, const at::Tensor& W_scales,
                            const std::optional<at::Tensor>& B, int64_t rb, int64_t cb) {
  return SparseLinearPackedParams::prepack_int8(W, W_scales, B, rb, cb);
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::vector<int64_t>> qlinear_unpack(
    const Packed& packed) {
  return packed->unpack();
}

at::Tensor qlinear(const at::Tensor& X, const Packed& p, double y_scale, int64_t y_zp) {
  return qlinear_static(X, p, y_scale, y_zp, false, "torch_sparse_backend::qlinear");
}

at::Tensor qlinear_relu(const at::Tensor& X, const Packed& p, double y_scale, int64_t y_zp) {
  return qlinear_static(X, p, y_scale, y_zp, true, "torch_sparse_backend::qlinear_relu");
}

at::Tensor qlinear_uint8(const at::Tensor& X, double x_scale, int64_t x_zp, const Packed& p,
                         double y_scale, int64_t y_zp) {
  return qlinear_static_uint8(X, x_scale, x_zp, p, y_scale, y_zp, false,
                              "torch_sparse_backend::qlinear_uint8");
}

at::Tensor qlinear_relu_uint8(const at::Tensor& X, double x_scale, int64_t x_zp, const Packed& p,
                              double y_scale, int64_t y_zp) {
  return qlinear_static_uint8(X, x_scale, x_zp, p, y_scale, y_zp, true,
                              "torch_sparse_backend::qlinear_relu_uint8");
}

at::Tensor qlinear_dynamic(const at::Tensor& X, const Packed& p) {
  return qlinear_dynamic_impl(X, p, false, "torch_sparse_backend::qlinear_dynamic");
}

at::Tensor qlinear_relu_dynamic(const at::Tensor& X, const Packed& p) {
  return qlinear_dynamic_impl(X, p, true, "torch_sparse_backend::qlinear_relu_dynamic");
}

}  // namespace

TORCH_LIBRARY(torch_sparse_backend, m) {
  m.class_<SparseLinearPackedParams>("SparseLinearPackedParams")
      .def_pickle(
          [](const Packed& self) { return self->state(); },
          [](SerializedState state) { return SparseLinearPackedParams::from_state(state); })
      .def("kernel", [](const Packed& self) { return std::string(self->plan().name()); })
      .def("out_features", [](const Packed& self) { return self->out_features(); })
      .def("in_features", [](const Packed& self) { return self->in_features(); })
      .def("block_shape",
           [](const Packed& self) {
             return std::vector<int64_t>{self->weight().rb, self->weight().cb};
           })
      .def("num_blocks", [](const Packed& self) { return self->weight().num_blocks(); })
      .def("density",
           [](const Packed& self) {
             const BcsrMatrix& w = self->weight();
             return static_cast<double>(w.num_blocks()) /
                    static_cast<double>(w.block_rows() * w.block_cols());
           })
      .def("packed_bytes",
           [](const Packed& self) { return static_cast<int64_t>(self->plan().packed_bytes()); })
      // What torch.compile / torch.export see of the object (the fake class in
      // torch_sparse_backend/_fake.py is rebuilt from it): sizes and metadata.
      .def("__obj_flatten__", [](const Packed& self) {
        const BcsrMatrix& w = self->weight();
        return std::make_tuple(
            std::make_tuple(std::string("out_features"), w.N),
            std::make_tuple(std::string("in_features"), w.K),
            std::make_tuple(std::string("block_shape"), std::vector<int64_t>{w.rb, w.cb}),
            std::make_tuple(std::string("num_blocks"), w.num_blocks()),
            std::make_tuple(std::string("kernel"), std::string(self->plan().name())),
            std::make_tuple(std::string("packed_bytes"),
                            static_cast<int64_t>(self->plan().packed_bytes())));
      });

  // Schemas name the class by its TorchScript qualified name.
  const std::string cls = "__torch__.torch.classes.torch_sparse_backend.SparseLinearPackedParams";
  auto def = [&](const std::string& s) { m.def(torch::schema(s.c_str())); };
  def("qlinear_prepack(Tensor W, Tensor? B, int out_features_block_size, "
      "int in_features_block_size) -> " + cls);
  def("qlinear(Tensor X, " + cls + " W_prepack, float Y_scale, int Y_zero_point) -> Tensor Y");
  def("qlinear_relu(Tensor X, " + cls + " W_prepack, float Y_scale, int Y_zero_point) -> Tensor Y");
  def("qlinear_dynamic(Tensor X, " + cls + " W_prepack) -> Tensor Y");
  // The same ops on plain integer tensors, with no quantized dtype.
  def("qlinear_prepack_int8(Tensor W, Tensor W_scales, Tensor? B, int out_features_block_size, "
      "int in_features_block_size) -> " + cls);
  def("qlinear_uint8(Tensor X, float X_scale, int X_zero_point, " + cls +
      " W_prepack, float Y_scale, int Y_zero_point) -> Tensor Y");
  def("qlinear_relu_uint8(Tensor X, float X_scale, int X_zero_point, " + cls +
      " W_prepack, float Y_scale, int Y_zero_point) -> Tensor Y");
  def("qlinear_relu_dynamic(Tensor X, " + cls + " W_prepack) -> Tensor Y");
  m.def(torch::schema(("qlinear_unpack(" + cls +
                       " W_prepack) -> (Tensor W_origin, Tensor? B_origin, int[] block_pattern)")
                          .c_str()),
        qlinear_unpack);
  m.def(torch::schema(("qlinear_unpack_int8(" + cls +
                       " W_prepack) -> (Tensor W_int8, Tensor W_scales, Tensor? B_origin, "
                       "int[] block_pattern)")
                          .c_str()),
        [](const Packed& p) { return p->unpack_int8(); });
  m.def(torch::schema(("_with_kernel(" + cls + " W_prepack, str kernel) -> " + cls).c_str()),
        [](const Packed& p, const std::string& kernel) { return p->with_variant(kernel); });
  m.def("_active_kernel() -> str", [] { return active_variant(); });
  m.def("_runnable_kernels() -> str[]", runnable_variants);
  m.def("_compiled_kernels() -> str[]", [] { return compiled_variants(); });
  m.def("_cpu_features() -> str[]", cpu_feature_names);
  // False when this library was compiled without the threading runtime that
  // at::parallel_for needs, so that every op would run on one thread.
  m.def("_intra_op_parallel() -> bool", [] {
#ifdef INTRA_OP_PARALLEL
    return true;
#else
    return false;
#endif
  });
}

TORCH_LIBRARY_IMPL(torch_sparse_backend, CompositeExplicitAutograd, m) {
  m.impl("qlinear_prepack", qlinear_prepack);
  m.impl("qlinear", qlinear);
  m.impl("qlinear_relu", qlinear_relu);
  m.impl("qlinear_dynamic", qlinear_dynamic);
  m.impl("qlinear_prepack_int8", qlinear_prepack_int8);
  m.impl("qlinear_uint8", qlinear_uint8);
  m.impl("qlinear_relu_uint8", qlinear_relu_uint8);
  m.impl("qlinear_relu_dynamic", qlinear_relu_dynamic);
}

}  // namespace tsb

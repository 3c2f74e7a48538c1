// Prepack, unpack, validation and serialization of SparseLinearPackedParams.
#include "packed_params.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cfloat>
#include <cmath>

#include "cpu.h"

namespace tsb {
namespace {

// Tensors that come from a caller or a file must hold their data in CPU memory.
void check_dense_cpu(const at::Tensor& t, const std::string& what) {
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, what, " must be a dense tensor, got layout ",
                   t.layout());
  TORCH_CHECK_VALUE(t.device().is_cpu(), what, " must be on the CPU, got ", t.device());
}

std::vector<int32_t> int32_vector(const at::Tensor& t, const char* what) {
  check_dense_cpu(t, std::string("serialized sparse linear state: ") + what);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt && t.dim() == 1,
                   "serialized sparse linear state: ", what,
                   " must be a 1-D int32 tensor, got ", t.scalar_type(), " of dim ", t.dim());
  const at::Tensor c = t.contiguous();
  const int32_t* p = c.data_ptr<int32_t>();
  return std::vector<int32_t>(p, p + c.numel());
}

}  // namespace

std::shared_ptr<const SparseLinearPackedParams::StaticScales> SparseLinearPackedParams::static_scales(
    float xs, float ys, const char* op, double x_scale, double y_scale) const {
  std::shared_ptr<const StaticScales> cached = std::atomic_load(&static_scales_);
  if (cached && cached->xs == xs && cached->ys == ys) return cached;
  auto s = std::make_shared<StaticScales>();
  s->xs = xs;
  s->ys = ys;
  const size_t n = w_scale_.size();
  s->requant.resize(n);
  s->bias_scaled.resize(n);
  // Two passes that the compiler vectorizes (|v| <= FLT_MAX is false for
  // infinities and NaN); the message names the first channel out of range.
  bool in_range = true;
  for (size_t i = 0; i < n; ++i) {
    const float act_times_w = xs * w_scale_[i];
    s->requant[i] = act_times_w / ys;
    s->bias_scaled[i] = bias_[i] / act_times_w;
  }
  for (size_t i = 0; i < n; ++i) {
    in_range &= (s->requant[i] > 0) & (s->requant[i] <= FLT_MAX) & (std::fabs(s->bias_scaled[i]) <= FLT_MAX);
  }
  for (size_t i = 0; !in_range && i < n; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(s->requant[i]) && s->requant[i] > 0 &&
                          std::isfinite(s->bias_scaled[i]),
                      op, ": input scale ", x_scale, " x weight scale ", w_scale_[i],
                      " / output scale ", y_scale, " is outside float32 range (output channel ",
                      i, ")");
  }
  std::shared_ptr<const StaticScales> result = std::move(s);
  std::atomic_store(&static_scales_, result);
  return result;
}

SparseLinearPackedParams::SparseLinearPackedParams(BcsrMatrix weight, bool per_channel,
                                                   std::vector<double> scales,
                                                   std::optional<at::Tensor> bias,
                                                   const std::string& variant)
    : weight_(std::move(weight)), per_channel_(per_channel), scales_(std::move(scales)) {
  const std::string err = validate_bcsr(weight_);
  TORCH_CHECK_VALUE(err.empty(), "sparse linear weight: ", err);
  const int64_t N = weight_.N, Np = weight_.padded_n();
  TORCH_CHECK_VALUE(static_cast<int64_t>(scales_.size()) == (per_channel_ ? N : 1),
                    "sparse linear weight: expected ", per_channel_ ? N : 1,
                    " weight scale(s), got ", scales_.size());
  w_scale_.assign(Np, 1.f);
  for (int64_t n = 0; n < N; ++n) {
    const double s = scales_[per_channel_ ? n : 0];
    const float sf = static_cast<float>(s);
    TORCH_CHECK_VALUE(std::isfinite(s) && s > 0 && std::isfinite(sf) && sf > 0,
                      "sparse linear weight: scales must be finite and positive, got ", s,
                      per_channel_ ? " for output channel " + std::to_string(n) : "");
    w_scale_[n] = sf;
  }
  bias_.assign(Np, 0.f);
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK_TYPE(!b.is_quantized() && b.scalar_type() == at::kFloat,
                     "sparse linear bias must be a float32 tensor, got ",
                     b.is_quantized() ? "a quantized tensor" : c10::toString(b.scalar_type()));
    check_dense_cpu(b, "sparse linear bias");
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == N, "sparse linear bias must have shape [",
                      N, "] (out_features), got ", b.sizes());
    bias_tensor_ = b.detach().contiguous().clone();
    const float* p = bias_tensor_->data_ptr<float>();
    for (int64_t n = 0; n < N; ++n) {
      TORCH_CHECK_VALUE(std::isfinite(p[n]), "sparse linear bias must be finite, got ", p[n],
                        " for output channel ", n);
      bias_[n] = p[n];
    }
  }
  plan_ = make_plan_for_cpu(weight_, variant);
}

c10::intrusive_ptr<SparseLinearPackedParams> SparseLinearPackedParams::with_variant(
    const std::string& variant) const {
  return c10::make_intrusive<SparseLinearPackedParams>(weight_, per_channel_, scales_,
                                                       bias_tensor_, variant);
}

c10::intrusive_ptr<SparseLinearPackedParams> SparseLinearPackedParams::prepack(
    const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    int64_t rb, int64_t cb) {
  TORCH_CHECK_TYPE(weight.is_quantized() && weight.scalar_type() == at::kQInt8,
                   "qlinear_prepack: weight must be a quantized tensor of dtype torch.qint8, "
                   "got ",
                   weight.is_quantized() ? c10::toString(weight.scalar_type())
                                         : "an unquantized " +
                                               std::string(c10::toString(weight.scalar_type())) +
                                               " tensor");
  TORCH_CHECK_VALUE(weight.device().is_cpu(), "qlinear_prepack: weight must be on the CPU");
  TORCH_CHECK_VALUE(weight.dim() == 2,
                    "qlinear_prepack: weight must be 2-D [out_features, in_features], got ",
                    weight.dim(), "-D");
  const int64_t N = weight.size(0), K = weight.size(1);
  const std::string shape_err = check_shape(N, K, rb, cb);
  TORCH_CHECK_VALUE(shape_err.empty(), "qlinear_prepack: ", shape_err);

  const auto qs = weight.qscheme();
  bool per_channel = false;
  std::vector<double> scales;
  if (qs == at::kPerTensorAffine || qs == at::kPerTensorSymmetric) {
    TORCH_CHECK_VALUE(weight.q_zero_point() == 0,
                      "qlinear_prepack: weight zero point must be 0, got ",
                      weight.q_zero_point());
    scales.push_back(weight.q_scale());
  } else if (qs == at::kPerChannelAffine || qs == at::kPerChannelSymmetric) {
    TORCH_CHECK_VALUE(weight.q_per_channel_axis() == 0,
                      "qlinear_prepack: per-channel weight must be quantized along axis 0 "
                      "(output channels), got axis ",
                      weight.q_per_channel_axis());
    TORCH_CHECK_VALUE(weight.q_per_channel_zero_points().eq(0).all().item<bool>(),
                      "qlinear_prepack: weight zero points must all be 0");
    const at::Tensor s = weight.q_per_channel_scales().to(at::kDouble).contiguous();
    scales.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    per_channel = true;
  } else {
    TORCH_CHECK_VALUE(false, "qlinear_prepack: unsupported weight qscheme ", c10::toString(qs),
                      "; expected per-tensor or per-channel (axis 0) affine");
  }
  return from_int8(weight.int_repr(), per_channel, std::move(scales), bias, rb, cb);
}

c10::intrusive_ptr<SparseLinearPackedParams> SparseLinearPackedParams::prepack_int8(
    const at::Tensor& weight, const at::Tensor& scales, const std::optional<at::Tensor>& bias,
    int64_t rb, int64_t cb) {
  const char* op = "qlinear_prepack_int8";
  TORCH_CHECK_TYPE(!weight.is_quantized() && weight.scalar_type() == at::kChar, op,
                   ": weight must be an int8 tensor, got ",
                   weight.is_quantized() ? "a quantized tensor (use qlinear_prepack)"
                                         : c10::toString(weight.scalar_type()));
  TORCH_CHECK_VALUE(weight.device().is_cpu(), op, ": weight must be on the CPU");
  TORCH_CHECK_VALUE(weight.dim() == 2, op,
                    ": weight must be 2-D [out_features, in_features], got ", weight.dim(), "-D");
  const std::string shape_err = check_shape(weight.size(0), weight.size(1), rb, cb);
  TORCH_CHECK_VALUE(shape_err.empty(), op, ": ", shape_err);
  TORCH_CHECK_TYPE(!scales.is_quantized() && (scales.scalar_type() == at::kDouble ||
                                              scales.scalar_type() == at::kFloat),
                   op, ": weight scales must be a float32 or float64 tensor, got ",
                   scales.is_quantized() ? "a quantized tensor" : c10::toString(scales.scalar_type()));
  const int64_t N = weight.size(0);
  TORCH_CHECK_VALUE(scales.dim() <= 1 && (scales.numel() == 1 || scales.numel() == N), op,
                    ": weight scales must have 1 element (per tensor) or out_features=", N,
                    " elements (per channel), got shape ", scales.sizes());
  const at::Tensor s = scales.to(at::kDouble).contiguous();
  std::vector<double> sc(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  const bool per_channel = scales.dim() == 1 && scales.numel() == N && N > 1;
  if (!per_channel) sc.resize(1);
  return from_int8(weight, per_channel, std::move(sc), bias, rb, cb);
}

c10::intrusive_ptr<SparseLinearPackedParams> SparseLinearPackedParams::from_int8(
    const at::Tensor& weight, bool per_channel, std::vector<double> scales,
    const std::optional<at::Tensor>& bias, int64_t rb, int64_t cb) {
  const at::Tensor w = weight.contiguous();
  BcsrMatrix m = pack_bcsr(w.data_ptr<int8_t>(), w.size(0), w.size(1), rb, cb);
  return c10::make_intrusive<SparseLinearPackedParams>(std::move(m), per_channel,
                                                       std::move(scales), bias);
}

SerializedState SparseLinearPackedParams::state() const {
  auto i32 = [](const std::vector<int32_t>& v) {
    return at::tensor(at::ArrayRef<int32_t>(v), at::kInt);
  };
  at::Tensor values = at::empty({static_cast<int64_t>(weight_.values.size())}, at::kChar);
  std::copy(weight_.values.begin(), weight_.values.end(), values.data_ptr<int8_t>());
  return SerializedState(
      kSerializationVersion,
      {weight_.N, weight_.K, weight_.rb, weight_.cb, per_channel_ ? 1 : 0},
      {at::tensor(at::ArrayRef<double>(scales_), at::kDouble), i32(weight_.row_ptr),
       i32(weight_.col_idx), values},
      bias_tensor_);
}

c10::intrusive_ptr<SparseLinearPackedParams> SparseLinearPackedParams::from_state(
    SerializedState state) {
  auto& [version, sizes, tensors, bias] = state;
  TORCH_CHECK_VALUE(version == kSerializationVersion,
                    "serialized sparse linear state has version ", version,
                    "; this build reads version ", kSerializationVersion,
                    " (upgrade torch_sparse_backend to load newer files)");
  TORCH_CHECK_VALUE(sizes.size() == 5, "serialized sparse linear state: expected 5 sizes, got ",
                    sizes.size());
  TORCH_CHECK_VALUE(tensors.size() == 4,
                    "serialized sparse linear state: expected 4 tensors, got ", tensors.size());
  TORCH_CHECK_VALUE(sizes[4] == 0 || sizes[4] == 1,
                    "serialized sparse linear state: bad qscheme flag ", sizes[4]);
  BcsrMatrix m;
  m.N = sizes[0];
  m.K = sizes[1];
  m.rb = sizes[2];
  m.cb = sizes[3];
  const std::string shape_err = check_shape(m.N, m.K, m.rb, m.cb);
  TORCH_CHECK_VALUE(shape_err.empty(), "serialized sparse linear state: ", shape_err);
  const at::Tensor& scales = tensors[0];
  const at::Tensor& values = tensors[3];
  check_dense_cpu(scales, "serialized sparse linear state: scales");
  check_dense_cpu(values, "serialized sparse linear state: values");
  TORCH_CHECK_TYPE(scales.scalar_type() == at::kDouble && scales.dim() == 1,
                   "serialized sparse linear state: scales must be a 1-D float64 tensor");
  TORCH_CHECK_TYPE(values.scalar_type() == at::kChar && values.dim() == 1,
                   "serialized sparse linear state: values must be a 1-D int8 tensor");
  m.row_ptr = int32_vector(tensors[1], "row_ptr");
  m.col_idx = int32_vector(tensors[2], "col_idx");
  const at::Tensor v = values.contiguous();
  m.values.assign(v.data_ptr<int8_t>(), v.data_ptr<int8_t>() + v.numel());
  const at::Tensor s = scales.contiguous();
  std::vector<double> sc(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  const std::string err = validate_bcsr(m);
  TORCH_CHECK_VALUE(err.empty(), "serialized sparse linear state: ", err);
  return c10::make_intrusive<SparseLinearPackedParams>(std::move(m), sizes[4] == 1,
                                                       std::move(sc), bias);
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>, std::vector<int64_t>>
SparseLinearPackedParams::unpack_int8() const {
  at::Tensor w = at::empty({weight_.N, weight_.K}, at::kChar);
  unpack_bcsr(weight_, w.data_ptr<int8_t>());
  std::optional<at::Tensor> b;
  if (bias_tensor_.has_value()) b = bias_tensor_->clone();
  return {w, at::tensor(at::ArrayRef<double>(scales_), at::kDouble), b, {weight_.rb, weight_.cb}};
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::vector<int64_t>>
SparseLinearPackedParams::unpack() const {
  auto [w, scales, b, block_shape] = unpack_int8();
  at::Tensor q;
  if (per_channel_) {
    q = at::_make_per_channel_quantized_tensor(w, scales, at::zeros({weight_.N}, at::kLong), 0);
  } else {
    q = at::_make_per_tensor_quantized_tensor(w, scales_[0], 0);
  }
  return {q, b, block_shape};
}

}  // namespace tsb

// The prepacked weight of a sparse quantized linear layer, as a TorchScript
// custom class: torch.classes.torch_sparse_backend.SparseLinearPackedParams.
//
// It keeps the canonical block-sparse weight (what is serialized and what
// unpack gives back) and the plan of the kernel variant chosen for the running
// CPU (rebuilt at load time, so a file saved on one machine runs on any other).
// Immutable after construction (but for a cache of the static ops' scales,
// which is thread-safe): one instance may be used from many threads.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/sparse_core.h"

namespace tsb {

// Version 1 state: (version, [N, K, rb, cb, per_channel],
//                   [scales float64, row_ptr int32, col_idx int32, values int8],
//                   bias float32 or None)
using SerializedState = std::tuple<int64_t, std::vector<int64_t>, std::vector<at::Tensor>,
                                   std::optional<at::Tensor>>;
constexpr int64_t kSerializationVersion = 1;

struct SparseLinearPackedParams : torch::CustomClassHolder {
  // Validates everything; throws c10::Error subclasses naming the problem.
  // `variant` names the kernel variant to plan for ("" -> active_variant(),
  // see cpu.h).
  SparseLinearPackedParams(BcsrMatrix weight, bool per_channel, std::vector<double> scales,
                           std::optional<at::Tensor> bias, const std::string& variant = "");

  static c10::intrusive_ptr<SparseLinearPackedParams> prepack(
      const at::Tensor& weight, const std::optional<at::Tensor>& bias,
      int64_t rb, int64_t cb);
  // The same from a plain int8 weight and its scales (1 element: per tensor;
  // out_features elements: per output channel), with no quantized dtype.
  static c10::intrusive_ptr<SparseLinearPackedParams> prepack_int8(
      const at::Tensor& weight, const at::Tensor& scales, const std::optional<at::Tensor>& bias,
      int64_t rb, int64_t cb);
  static c10::intrusive_ptr<SparseLinearPackedParams> from_state(SerializedState state);

  SerializedState state() const;
  // The same weight planned for another kernel variant (for tests and debugging).
  c10::intrusive_ptr<SparseLinearPackedParams> with_variant(const std::string& variant) const;
  // (weight qint8 [N, K], bias or None, [rb, cb]) exactly as given to prepack.
  std::tuple<at::Tensor, std::optional<at::Tensor>, std::vector<int64_t>> unpack() const;
  // (weight int8 [N, K], scales float64 [1 or N], bias or None, [rb, cb]).
  std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>, std::vector<int64_t>>
  unpack_int8() const;

  int64_t out_features() const { return weight_.N; }
  int64_t in_features() const { return weight_.K; }
  const BcsrMatrix& weight() const { return weight_; }
  const KernelPlan& plan() const { return *plan_; }
  // float(w_scale[n]), padded to the block grid with 1.
  const std::vector<float>& weight_scales() const { return w_scale_; }
  // bias[n] or 0, padded to the block grid with 0.
  const std::vector<float>& bias_values() const { return bias_; }

  // The static ops' per-channel scales for input scale xs and output scale ys
  // (float32, as the kernels use them): requant[n] = xs * w_scale[n] / ys and
  // bias_scaled[n] = bias[n] / (xs * w_scale[n]). Computed and range-checked
  // on the first call with a pair of scales and kept for the next calls with
  // the same pair (a static layer's scales do not change), so a call costs no
  // per-channel work. Throws c10::ValueError naming `op` and the channel when
  // a value is outside float32 range. Thread-safe.
  struct StaticScales {
    float xs = 0, ys = 0;
    std::vector<float> requant, bias_scaled;
  };
  std::shared_ptr<const StaticScales> static_scales(float xs, float ys, const char* op,
                                                    double x_scale, double y_scale) const;

 private:
  static c10::intrusive_ptr<SparseLinearPackedParams> from_int8(
      const at::Tensor& weight, bool per_channel, std::vector<double> scales,
      const std::optional<at::Tensor>& bias, int64_t rb, int64_t cb);

  BcsrMatrix weight_;
  bool per_channel_;
  std::vector<double> scales_;
  std::optional<at::Tensor> bias_tensor_;
  std::vector<float> w_scale_;
  std::vector<float> bias_;
  std::unique_ptr<const KernelPlan> plan_;
  // The last StaticScales computed (std::atomic_load / std::atomic_store only).
  mutable std::shared_ptr<const StaticScales> static_scales_;
};

}  // namespace tsb

"""Dynamic sparse quantized Linear: float in, float out, int8 weights."""

from __future__ import annotations

import torch
import torch.ao.nn.intrinsic as nni

from .._base import SparseLinearBase, block_shape_of, quantize_float_weight, quantize_weight_int8

__all__ = ["Linear", "LinearReLU"]

_OPS = torch.ops.torch_sparse_backend


class Linear(SparseLinearBase):
    r"""A block-sparse dynamically quantized linear layer: float input and output.

    Mirrors :class:`torch.ao.nn.sparse.quantized.dynamic.Linear` and runs
    ``torch.ops.torch_sparse_backend.qlinear_dynamic`` on any quantized engine.
    The activation is quantized per call to full-range uint8.
    """

    _FLOAT_MODULE = torch.nn.Linear

    def _get_name(self) -> str:
        return "SparseQuantizedDynamicLinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OPS.qlinear_dynamic(x, self._packed_params)

    @classmethod
    def from_float(cls, mod: torch.nn.Module, use_precomputed_fake_quant: bool = False):
        """Converts a float ``nn.Linear`` carrying ``sparse_params`` (no calibration needed).

        The weight observer comes from ``mod.qconfig`` if it has one, else the
        default dynamic qconfig's.
        """
        linear = mod[0] if isinstance(mod, nni.LinearReLU) else mod
        if type(linear) is not torch.nn.Linear:
            raise TypeError(
                f"{cls.__name__}.from_float expects torch.nn.Linear"
                f"{' or LinearReLU' if cls is LinearReLU else ''}, got {type(mod).__name__}"
            )
        rb, cb = block_shape_of(linear)
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is not None and qconfig.weight is not None:
            weight_observer = qconfig.weight()
        else:
            from torch.ao.quantization.qconfig import default_dynamic_qconfig

            weight_observer = default_dynamic_qconfig.weight()
        qweight = quantize_float_weight(linear.weight, weight_observer)
        qlinear = cls(linear.in_features, linear.out_features, rb, cb, bias=False)
        qlinear.set_weight_bias(qweight, linear.bias, rb, cb)
        return qlinear

    @classmethod
    def from_linear(
        cls,
        linear: torch.nn.Linear,
        sparse_block_shape: tuple[int, int] | None = None,
        per_channel: bool = True,
    ):
        """Builds the module from a float ``nn.Linear`` without torch.ao or quantized dtypes.

        The block shape is ``sparse_block_shape`` or ``linear.sparse_params``; the
        weight is quantized with :func:`quantize_weight_int8`.
        """
        rb, cb = sparse_block_shape if sparse_block_shape is not None else block_shape_of(linear)
        w_int8, scales = quantize_weight_int8(linear.weight, per_channel)
        bias = None if linear.bias is None else linear.bias.detach()
        qlinear = cls(linear.in_features, linear.out_features, rb, cb, bias=False)
        qlinear.set_int8_weight_bias(w_int8, scales, bias, rb, cb)
        return qlinear

    @classmethod
    def from_reference(
        cls, ref_qlinear: torch.nn.Module, sparse_block_shape: tuple[int, int] | None = None
    ):
        """Converts a reference quantized Linear (torch.ao.nn.quantized.reference.Linear)."""
        rb, cb = sparse_block_shape if sparse_block_shape is not None else block_shape_of(ref_qlinear)
        qweight = ref_qlinear.get_quantized_weight()
        qlinear = cls(ref_qlinear.in_features, ref_qlinear.out_features, rb, cb, bias=False)
        qlinear.set_weight_bias(qweight, ref_qlinear.bias, rb, cb)
        return qlinear


class LinearReLU(Linear):
    r"""Dynamic sparse quantized Linear fused with ReLU (``qlinear_relu_dynamic``)."""

    _FLOAT_MODULE = nni.LinearReLU

    def _get_name(self) -> str:
        return "SparseQuantizedDynamicLinearReLU"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OPS.qlinear_relu_dynamic(x, self._packed_params)

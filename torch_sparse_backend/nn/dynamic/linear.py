"""Dynamic sparse quantized Linear: float in, float out, int8 weights."""

from __future__ import annotations

import torch
import torch.ao.nn.intrinsic as nni

from ... import functional
from .._base import SparseLinearBase, block_shape_of, float_linear, quantize_float_weight

__all__ = ["Linear", "LinearReLU"]


class Linear(SparseLinearBase):
    r"""A block-sparse dynamically quantized linear layer: float input and output.

    Mirrors :class:`torch.ao.nn.sparse.quantized.dynamic.Linear` and runs
    ``torch.ops.torch_sparse_backend.qlinear_dynamic`` on any quantized engine,
    through :func:`torch_sparse_backend.functional.qlinear_dynamic`.
    The activation is quantized per call to full-range uint8.
    """

    _FLOAT_MODULE = torch.nn.Linear

    def _get_name(self) -> str:
        return "SparseQuantizedDynamicLinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.qlinear_dynamic(x, self._packed_params)

    @classmethod
    def from_float(cls, mod: torch.nn.Module, use_precomputed_fake_quant: bool = False):
        """Converts a float ``nn.Linear`` carrying ``sparse_params`` (no calibration needed).

        The weight observer comes from ``mod.qconfig`` if it has one, else the
        default dynamic qconfig's.
        """
        linear = float_linear(mod)
        if type(linear) is not torch.nn.Linear:
            raise TypeError(
                f"{cls.__name__}.from_float expects torch.nn.Linear"
                f"{' or LinearReLU' if cls is LinearReLU else ''}, got {type(mod).__name__}"
            )
        block_shape = block_shape_of(linear)
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is not None and qconfig.weight is not None:
            weight_observer = qconfig.weight()
        else:
            from torch.ao.quantization.qconfig import default_dynamic_qconfig

            weight_observer = default_dynamic_qconfig.weight()
        return cls._with_weight(quantize_float_weight(linear.weight, weight_observer), linear.bias, block_shape)

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
        return cls._from_linear(linear, sparse_block_shape, per_channel)

    @classmethod
    def from_reference(
        cls, ref_qlinear: torch.nn.Module, sparse_block_shape: tuple[int, int] | None = None
    ):
        """Converts a reference quantized Linear (torch.ao.nn.quantized.reference.Linear)."""
        return cls._from_reference(ref_qlinear, sparse_block_shape)


class LinearReLU(Linear):
    r"""Dynamic sparse quantized Linear fused with ReLU (``qlinear_relu_dynamic``)."""

    _FLOAT_MODULE = nni.LinearReLU

    def _get_name(self) -> str:
        return "SparseQuantizedDynamicLinearReLU"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.qlinear_relu_dynamic(x, self._packed_params)

"""Static sparse quantized Linear: quint8 in, quint8 out."""

from __future__ import annotations

import torch
import torch.ao.nn.intrinsic as nni

from .. import functional
from ._base import SparseLinearBase, block_shape_of, float_linear, quantize_float_weight

__all__ = ["Linear", "LinearReLU"]


class Linear(SparseLinearBase):
    r"""A block-sparse quantized linear layer with quantized input and output.

    Mirrors :class:`torch.ao.nn.sparse.quantized.Linear` and runs
    ``torch.ops.torch_sparse_backend.qlinear`` on any quantized engine, through
    :func:`torch_sparse_backend.functional.qlinear` (which skips torch.ops'
    per-call Python overhead in eager mode).

    Attributes:
        scale, zero_point: quantization parameters of the output.
    """

    _FLOAT_MODULE = torch.nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        row_block_size: int,
        col_block_size: int,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(in_features, out_features, row_block_size, col_block_size, bias, dtype)
        self.scale = 1.0
        self.zero_point = 0

    def _get_name(self) -> str:
        return "SparseQuantizedLinear"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, zero_point={self.zero_point}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.qlinear(x, self._packed_params, self.scale, self.zero_point)

    @torch.jit.export
    def forward_uint8(self, x: torch.Tensor, x_scale: float, x_zero_point: int) -> torch.Tensor:
        """``forward`` on plain tensors: uint8 input with its qparams, uint8 output
        whose qparams are ``self.scale`` and ``self.zero_point``."""
        return functional.qlinear_uint8(x, x_scale, x_zero_point, self._packed_params, self.scale, self.zero_point)

    def _set_output_qparams(self, scale, zero_point) -> "Linear":
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # float64, so the output scale comes back exactly.
        destination[prefix + "scale"] = torch.tensor(self.scale, dtype=torch.double)
        destination[prefix + "zero_point"] = torch.tensor(self.zero_point, dtype=torch.long)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for key in ("scale", "zero_point"):
            if prefix + key in state_dict:
                value = state_dict.pop(prefix + key)
                setattr(self, key, float(value) if key == "scale" else int(value))
            else:
                missing_keys.append(prefix + key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @classmethod
    def from_float(cls, mod: torch.nn.Module, use_precomputed_fake_quant: bool = False):
        """Converts an observed float ``nn.Linear`` (after ``prepare`` and calibration).

        The block shape comes from ``mod.sparse_params["sparse_block_shape"]``, as
        ``torch.ao.pruning`` leaves it; output qparams from the activation observer.
        """
        linear = float_linear(mod)
        if type(linear) is not torch.nn.Linear:
            raise TypeError(
                f"{cls.__name__}.from_float expects torch.nn.Linear"
                f"{' or LinearReLU' if cls is LinearReLU else ''}, got {type(mod).__name__}"
            )
        if getattr(mod, "qconfig", None) is None:
            raise ValueError(f"{cls.__name__}.from_float: the float module has no qconfig")
        if not hasattr(mod, "activation_post_process"):
            raise ValueError(
                f"{cls.__name__}.from_float: the float module has no activation observer; "
                "run torch.ao.quantization.prepare and calibrate first"
            )
        block_shape = block_shape_of(linear)
        if use_precomputed_fake_quant and hasattr(linear, "weight_fake_quant"):
            weight_observer = linear.weight_fake_quant
        else:
            weight_observer = mod.qconfig.weight()
        qweight = quantize_float_weight(linear.weight, weight_observer)
        scale, zero_point = mod.activation_post_process.calculate_qparams()
        return cls._with_weight(qweight, linear.bias, block_shape)._set_output_qparams(scale, zero_point)

    @classmethod
    def from_linear(
        cls,
        linear: torch.nn.Linear,
        output_scale: float,
        output_zero_point: int,
        sparse_block_shape: tuple[int, int] | None = None,
        per_channel: bool = True,
    ):
        """Builds the module from a float ``nn.Linear`` and the output qparams, without
        torch.ao or quantized dtypes (use it through :meth:`forward_uint8`)."""
        module = cls._from_linear(linear, sparse_block_shape, per_channel)
        return module._set_output_qparams(output_scale, output_zero_point)

    @classmethod
    def from_reference(
        cls,
        ref_qlinear: torch.nn.Module,
        output_scale: float,
        output_zero_point: int,
        sparse_block_shape: tuple[int, int] | None = None,
    ):
        """Converts a reference quantized Linear (torch.ao.nn.quantized.reference.Linear).

        The block shape is ``sparse_block_shape`` if given, else the reference
        module's ``sparse_params["sparse_block_shape"]``.
        """
        module = cls._from_reference(ref_qlinear, sparse_block_shape)
        return module._set_output_qparams(output_scale, output_zero_point)


class LinearReLU(Linear):
    r"""Static sparse quantized Linear fused with ReLU (``qlinear_relu``)."""

    _FLOAT_MODULE = nni.LinearReLU

    def _get_name(self) -> str:
        return "SparseQuantizedLinearReLU"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.qlinear_relu(x, self._packed_params, self.scale, self.zero_point)

    @torch.jit.export
    def forward_uint8(self, x: torch.Tensor, x_scale: float, x_zero_point: int) -> torch.Tensor:
        return functional.qlinear_relu_uint8(
            x, x_scale, x_zero_point, self._packed_params, self.scale, self.zero_point
        )

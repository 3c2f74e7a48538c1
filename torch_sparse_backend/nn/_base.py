"""Weight handling shared by the static and dynamic sparse quantized Linear modules."""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
from torch.ao.nn.quantized.modules.utils import _quantize_weight

__all__ = [
    "SparseLinearBase",
    "block_shape_of",
    "float_linear",
    "quantize_float_weight",
    "quantize_weight_int8",
]

_OPS = torch.ops.torch_sparse_backend


def float_linear(mod: torch.nn.Module) -> torch.nn.Module:
    """The linear layer of a float module that converts to a sparse Linear: the first
    submodule of a fused ``LinearReLU``, else ``mod`` itself."""
    return mod[0] if isinstance(mod, nni.LinearReLU) else mod


def block_shape_of(mod: torch.nn.Module) -> tuple[int, int]:
    """The ``sparse_block_shape`` that ``torch.ao.pruning`` left on ``mod``, validated."""
    params = getattr(mod, "sparse_params", None)
    if not isinstance(params, dict) or "sparse_block_shape" not in params:
        raise ValueError(
            f"{type(mod).__name__} has no sparse_params['sparse_block_shape']; sparsify it with "
            "torch.ao.pruning and keep the block shape with "
            "sparsifier.squash_mask(params_to_keep=('sparse_block_shape',)), or set "
            "module.sparse_params = {'sparse_block_shape': (1, 4)}"
        )
    shape = params["sparse_block_shape"]
    if not (
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
    ):
        raise ValueError(f"sparse_block_shape must be a pair of ints, got {shape!r}")
    return int(shape[0]), int(shape[1])


def quantize_float_weight(weight: torch.Tensor, observer: Any) -> torch.Tensor:
    """Observes and quantizes a float weight to qint8 with zero point 0."""
    observer(weight)
    if observer.dtype != torch.qint8:
        raise ValueError(f"sparse Linear needs a torch.qint8 weight observer, got {observer.dtype}")
    _, zero_point = observer.calculate_qparams()
    if torch.as_tensor(zero_point).ne(0).any():
        raise ValueError(
            "sparse Linear needs symmetric weight quantization (zero point 0); use a "
            "symmetric qint8 weight observer such as the default qconfig's"
        )
    return _quantize_weight(weight.float(), observer)


def quantize_weight_int8(weight: torch.Tensor, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of a float weight on plain tensors (no quantized dtype).

    The scales are those of torch's symmetric qint8 min/max weight observers,
    ``max|w| / 127.5`` per output channel (or per tensor), at least float32 eps;
    values are ``clamp(round_half_even(w * float32(1 / scale)), -128, 127)``, the
    rounding of torch's quantize functions. Returns (int8 weight, float64 scales).
    """
    w = weight.detach().float()
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().reshape(1)
    scales = (amax / 127.5).clamp(min=torch.finfo(torch.float32).eps)
    inverse = 1.0 / (scales[:, None] if per_channel else scales)
    w_int8 = torch.clamp(torch.round(w * inverse), -128, 127).to(torch.int8)
    return w_int8, scales.double()


class SparseLinearBase(torch.nn.Module):
    """Holds the prepacked weight; subclasses define forward and the float conversion."""

    _version = 1
    __jit_unused_properties__ = ["sparse_block_shape", "density", "kernel"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        row_block_size: int,
        col_block_size: int,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__()
        if dtype != torch.qint8:
            raise ValueError(f"sparse quantized Linear supports only torch.qint8 weights, got {dtype}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        weight = torch.zeros(self.out_features, self.in_features, dtype=torch.int8)
        b = torch.zeros(self.out_features, dtype=torch.float) if bias else None
        self.set_int8_weight_bias(weight, torch.ones(1, dtype=torch.double), b, row_block_size, col_block_size)

    @classmethod
    def _with_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        block_shape: tuple[int, int],
        int8_scales: torch.Tensor | None = None,
    ):
        """A module holding ``weight`` (qint8, or int8 with ``int8_scales``) and ``bias``,
        in blocks of ``block_shape`` (rb, cb)."""
        rb, cb = block_shape
        module = cls(weight.size(1), weight.size(0), rb, cb, bias=False)
        bias = None if bias is None else bias.detach()
        if int8_scales is None:
            module.set_weight_bias(weight, bias, rb, cb)
        else:
            module.set_int8_weight_bias(weight, int8_scales, bias, rb, cb)
        return module

    @classmethod
    def _from_linear(cls, linear: torch.nn.Linear, sparse_block_shape, per_channel: bool):
        block_shape = sparse_block_shape if sparse_block_shape is not None else block_shape_of(linear)
        w_int8, scales = quantize_weight_int8(linear.weight, per_channel)
        return cls._with_weight(w_int8, linear.bias, block_shape, scales)

    @classmethod
    def _from_reference(cls, ref_qlinear: torch.nn.Module, sparse_block_shape):
        block_shape = sparse_block_shape if sparse_block_shape is not None else block_shape_of(ref_qlinear)
        return cls._with_weight(ref_qlinear.get_quantized_weight(), ref_qlinear.bias, block_shape)

    @classmethod
    def from_quantized(cls, dense: torch.nn.Module, sparse_block_shape: tuple[int, int]):
        """The sparse module equivalent to torch's dense quantized Linear ``dense``.

        Same quantized weight, bias and (static) output qparams; only the block
        shape is new.
        """
        module = cls._with_weight(dense.weight(), dense.bias(), sparse_block_shape)
        if hasattr(module, "scale"):
            module.scale = float(dense.scale)
            module.zero_point = int(dense.zero_point)
        return module

    @torch.jit.export
    def set_weight_bias(
        self,
        w: torch.Tensor,
        b: torch.Tensor | None,
        row_block_size: int,
        col_block_size: int,
    ) -> None:
        self._packed_params = _OPS.qlinear_prepack(w, b, row_block_size, col_block_size)
        self.out_features = w.size(0)
        self.in_features = w.size(1)

    @torch.jit.export
    def set_int8_weight_bias(
        self,
        w: torch.Tensor,
        w_scales: torch.Tensor,
        b: torch.Tensor | None,
        row_block_size: int,
        col_block_size: int,
    ) -> None:
        """Sets the weight from a plain int8 tensor and its scales (1 or out_features values)."""
        self._packed_params = _OPS.qlinear_prepack_int8(w, w_scales, b, row_block_size, col_block_size)
        self.out_features = w.size(0)
        self.in_features = w.size(1)

    @torch.jit.export
    def int8_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(int8 weight, float64 scales, bias), without quantized dtypes."""
        w, scales, b, _ = _OPS.qlinear_unpack_int8(self._packed_params)
        return w, scales, b

    @torch.jit.export
    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        w, b, block_shape = _OPS.qlinear_unpack(self._packed_params)
        return w, b, block_shape[0], block_shape[1]

    @torch.jit.export
    def weight(self) -> torch.Tensor:
        return self._weight_bias()[0]

    @torch.jit.export
    def bias(self) -> torch.Tensor | None:
        return self._weight_bias()[1]

    @property
    def sparse_block_shape(self) -> tuple[int, int]:
        rb, cb = self._packed_params.block_shape()
        return int(rb), int(cb)

    @property
    def density(self) -> float:
        """Fraction of weight blocks that are stored (nonzero)."""
        return float(self._packed_params.density())

    @property
    def kernel(self) -> str:
        """Name of the kernel variant that runs this layer."""
        return str(self._packed_params.kernel())

    def extra_repr(self) -> str:
        w = self.weight()
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"block_shape={self.sparse_block_shape}, density={self.density:.3f}, "
            f"qscheme={w.qscheme()}, kernel={self.kernel}"
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        w, b, rb, cb = self._weight_bias()
        destination[prefix + "weight"] = w
        destination[prefix + "bias"] = b
        destination[prefix + "sparse_block_shape"] = torch.tensor([rb, cb], dtype=torch.long)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is not None and version > self._version:
            error_msgs.append(
                f"{prefix}: state_dict has version {version}, newer than this "
                f"torch_sparse_backend's {self._version}"
            )
            return
        keys = ["weight", "bias", "sparse_block_shape"]
        missing = [prefix + k for k in keys if prefix + k not in state_dict]
        if missing:
            missing_keys.extend(missing)
        else:
            w = state_dict[prefix + "weight"]
            b = state_dict[prefix + "bias"]
            block_shape = state_dict[prefix + "sparse_block_shape"]
            if not (isinstance(w, torch.Tensor) and w.is_quantized and w.dim() == 2):
                error_msgs.append(f"{prefix}weight: expected a 2-D quantized tensor")
            elif b is not None and not isinstance(b, torch.Tensor):
                error_msgs.append(f"{prefix}bias: expected a tensor or None, got {type(b).__name__}")
            elif not (
                isinstance(block_shape, torch.Tensor)
                and block_shape.numel() == 2
                and not block_shape.is_floating_point()
            ):
                error_msgs.append(f"{prefix}sparse_block_shape: expected an integer tensor of 2 elements")
            else:
                try:
                    self.set_weight_bias(w, b, int(block_shape[0]), int(block_shape[1]))
                except (RuntimeError, ValueError, TypeError) as e:
                    error_msgs.append(f"{prefix}: {e}")
        for k in keys:
            state_dict.pop(prefix + k, None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

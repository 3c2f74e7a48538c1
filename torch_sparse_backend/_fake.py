"""Fake (meta) implementations for torch.compile and torch.export.

The packed params are a TorchScript class; tracing replaces them with
:class:`FakeSparseLinearPackedParams`, built from the C++ ``__obj_flatten__``,
and the ops with functions that only compute output shapes and dtypes.
Quantized dtypes have no fake-tensor support in torch, so traced static
models use the integer ops (``qlinear_uint8``), e.g. through
``torch_sparse_backend.nn.Linear.forward_uint8``.
"""

from __future__ import annotations

import torch
from torch._library.fake_class_registry import FakeScriptObject

__all__ = ["FakeSparseLinearPackedParams"]

_LIB = "torch_sparse_backend"


@torch._library.register_fake_class(f"{_LIB}::SparseLinearPackedParams")
class FakeSparseLinearPackedParams:
    """The packed params as tracing sees them: sizes, block shape (rb, cb), number
    of stored blocks, the name of the kernel variant and the packed weight's bytes."""

    def __init__(
        self,
        out_features: int,
        in_features: int,
        block_shape: list[int],
        num_blocks: int,
        kernel: str,
        packed_bytes: int,
    ) -> None:
        self._out_features = out_features
        self._in_features = in_features
        self._block_shape = list(block_shape)
        self._num_blocks = num_blocks
        self._kernel = kernel
        self._packed_bytes = packed_bytes

    @classmethod
    def __obj_unflatten__(cls, flattened):
        return cls(**dict(flattened))

    def out_features(self) -> int:
        return self._out_features

    def in_features(self) -> int:
        return self._in_features

    def block_shape(self) -> list[int]:
        return list(self._block_shape)

    def num_blocks(self) -> int:
        return self._num_blocks

    def density(self) -> float:
        rb, cb = self._block_shape
        blocks = -(-self._out_features // rb) * -(-self._in_features // cb)
        return self._num_blocks / blocks

    def kernel(self) -> str:
        return self._kernel

    def packed_bytes(self) -> int:
        return self._packed_bytes


def _output_sizes(x: torch.Tensor, packed) -> list[int]:
    # Traced: a FakeScriptObject around the fake class above. Called eagerly on
    # meta tensors: the real ScriptObject, which has the same methods.
    fake = packed.wrapped_obj if isinstance(packed, FakeScriptObject) else packed
    torch._check(x.dim() >= 1, lambda: "input must have at least one dimension")
    torch._check(
        x.shape[-1] == fake.in_features(),
        lambda: f"input has {x.shape[-1]} features but the weight has in_features={fake.in_features()}",
    )
    return [*x.shape[:-1], fake.out_features()]


def _static(x, packed, y_scale, y_zero_point):
    return torch._empty_affine_quantized(
        _output_sizes(x, packed), scale=y_scale, zero_point=y_zero_point, dtype=torch.quint8, device=x.device
    )


def _static_uint8(x, x_scale, x_zero_point, packed, y_scale, y_zero_point):
    torch._check(x.dtype == torch.uint8, lambda: f"input must be a uint8 tensor, got {x.dtype}")
    return x.new_empty(_output_sizes(x, packed), dtype=torch.uint8)


def _dynamic(x, packed):
    torch._check(x.dtype == torch.float32, lambda: f"input must be a float32 tensor, got {x.dtype}")
    return x.new_empty(_output_sizes(x, packed))


for _name, _impl in (
    ("qlinear", _static),
    ("qlinear_relu", _static),
    ("qlinear_uint8", _static_uint8),
    ("qlinear_relu_uint8", _static_uint8),
    ("qlinear_dynamic", _dynamic),
    ("qlinear_relu_dynamic", _dynamic),
):
    torch.library.register_fake(f"{_LIB}::{_name}")(_impl)

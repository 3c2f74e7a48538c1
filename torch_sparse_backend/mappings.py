"""Module mappings that make ``torch.ao.quantization.convert`` emit sparse modules.

Each mapping is torch's default mapping for the mode with ``nn.Linear`` and the
fused ``LinearReLU`` routed by :class:`SparseOrDense`: a layer that carries
``sparse_params`` (left by ``torch.ao.pruning``) and is sparse enough for the
sparse kernels to win becomes our sparse module, any other layer torch's dense
quantized module. So one ``convert`` call quantizes a whole model, stubs and all.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.ao.nn.intrinsic as nni
from torch.ao.quantization.quantization_mappings import (
    get_default_dynamic_quant_module_mappings,
    get_default_static_quant_module_mappings,
)

from . import nn as sparse_nn
from ._density import DEFAULT_MAX_DENSITY, decide
from .nn._base import float_linear

__all__ = [
    "SparseOrDense",
    "get_default_static_sparse_quant_module_mappings",
    "get_default_dynamic_sparse_quant_module_mappings",
]


class SparseOrDense:
    """A mapping target: the sparse module for a layer with ``sparse_params`` whose block
    density is at most ``max_density``, torch's dense quantized module otherwise."""

    def __init__(self, sparse: type, dense: type, max_density: float = DEFAULT_MAX_DENSITY) -> None:
        self.sparse = sparse
        self.dense = dense
        self.max_density = max_density

    def from_float(self, mod: torch.nn.Module, use_precomputed_fake_quant: bool = False):
        linear = float_linear(mod)
        use_sparse = hasattr(linear, "sparse_params") and decide("", linear, self.max_density).sparse
        target = self.sparse if use_sparse else self.dense
        return target.from_float(mod, use_precomputed_fake_quant=use_precomputed_fake_quant)

    def __repr__(self) -> str:
        return (f"SparseOrDense(sparse={self.sparse.__name__}, dense={self.dense.__qualname__}, "
                f"max_density={self.max_density})")


def _with_sparse_linear(
    mapping: dict[Callable, Any], linear: type, linear_relu: type, max_density: float
) -> dict:
    out = dict(mapping)
    out[torch.nn.Linear] = SparseOrDense(linear, mapping[torch.nn.Linear], max_density)
    out[nni.LinearReLU] = SparseOrDense(linear_relu, mapping[nni.LinearReLU], max_density)
    return out


def get_default_static_sparse_quant_module_mappings(
    max_density: float = DEFAULT_MAX_DENSITY,
) -> dict[Callable, Any]:
    """torch's default static mapping, with sparse ``Linear`` / ``LinearReLU`` where
    ``sparse_params`` is set and at most ``max_density`` of the weight blocks are nonzero."""
    return _with_sparse_linear(
        get_default_static_quant_module_mappings(), sparse_nn.Linear, sparse_nn.LinearReLU, max_density
    )


def get_default_dynamic_sparse_quant_module_mappings(
    max_density: float = DEFAULT_MAX_DENSITY,
) -> dict[Callable, Any]:
    """torch's default dynamic mapping, with sparse ``dynamic.Linear`` / ``dynamic.LinearReLU``."""
    return _with_sparse_linear(
        get_default_dynamic_quant_module_mappings(),
        sparse_nn.dynamic.Linear,
        sparse_nn.dynamic.LinearReLU,
        max_density,
    )

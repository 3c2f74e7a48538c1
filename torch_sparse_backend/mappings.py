"""Module mappings that make ``torch.ao.quantization.convert`` emit sparse modules.

Each mapping is torch's default mapping for the mode with ``nn.Linear`` and the
fused ``LinearReLU`` routed by :class:`SparseOrDense`: a layer that carries
``sparse_params`` (left by ``torch.ao.pruning``) becomes our sparse module, any
other layer torch's dense quantized module. So one ``convert`` call quantizes a
whole model, stubs and all.
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

__all__ = [
    "SparseOrDense",
    "get_default_static_sparse_quant_module_mappings",
    "get_default_dynamic_sparse_quant_module_mappings",
]


def _has_sparse_params(mod: torch.nn.Module) -> bool:
    linear = mod[0] if isinstance(mod, nni.LinearReLU) else mod
    params = getattr(linear, "sparse_params", None)
    return isinstance(params, dict) and "sparse_block_shape" in params


class SparseOrDense:
    """A mapping target: converts to ``sparse`` when the layer has sparse_params, else ``dense``."""

    def __init__(self, sparse: type, dense: type) -> None:
        self.sparse = sparse
        self.dense = dense

    def from_float(self, mod: torch.nn.Module, use_precomputed_fake_quant: bool = False):
        target = self.sparse if _has_sparse_params(mod) else self.dense
        return target.from_float(mod, use_precomputed_fake_quant=use_precomputed_fake_quant)

    def __repr__(self) -> str:
        return f"SparseOrDense(sparse={self.sparse.__name__}, dense={self.dense.__qualname__})"


def _with_sparse_linear(mapping: dict[Callable, Any], linear: type, linear_relu: type) -> dict:
    out = dict(mapping)
    out[torch.nn.Linear] = SparseOrDense(linear, mapping[torch.nn.Linear])
    out[nni.LinearReLU] = SparseOrDense(linear_relu, mapping[nni.LinearReLU])
    return out


def get_default_static_sparse_quant_module_mappings() -> dict[Callable, Any]:
    """torch's default static mapping, with sparse ``Linear`` / ``LinearReLU`` where ``sparse_params`` is set."""
    return _with_sparse_linear(
        get_default_static_quant_module_mappings(), sparse_nn.Linear, sparse_nn.LinearReLU
    )


def get_default_dynamic_sparse_quant_module_mappings() -> dict[Callable, Any]:
    """torch's default dynamic mapping, with sparse ``dynamic.Linear`` / ``dynamic.LinearReLU``."""
    return _with_sparse_linear(
        get_default_dynamic_quant_module_mappings(),
        sparse_nn.dynamic.Linear,
        sparse_nn.dynamic.LinearReLU,
    )

"""FX graph mode: a BackendConfig for ``prepare_fx`` and a ``convert_fx`` that emits sparse modules.

``torch.ao.quantization.quantize_fx.convert_fx`` always lowers reference
modules with its built-in native lowering (reference Linear -> torch's dense
quantized Linear), and none of its public hooks can route one nn.Linear to a
different quantized module: ``BackendPatternConfig.set_reference_quantized_module``
only changes the reference module, which the native lowering then leaves
wrapped in dequantize/quantize nodes, and the custom-module hooks apply only to
custom module classes, not to nn.Linear. So :func:`convert_fx` has torch's
signature, runs torch's ``convert_fx``, and then swaps each dense quantized
linear whose float module carried ``sparse_params`` for this package's module,
with the same quantized weight, bias and output qparams.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from torch.ao.quantization.backend_config import BackendConfig, get_native_backend_config
from torch.ao.quantization.quantize_fx import convert_fx as _torch_convert_fx
from torch.fx import GraphModule

from . import nn as sparse_nn
from ._density import DEFAULT_MAX_DENSITY, SparsityDecision, decide
from .nn._base import float_linear

__all__ = ["get_sparse_backend_config", "convert_fx"]

# Dense quantized module torch's lowering emits -> our sparse counterpart.
_SPARSE_FOR_DENSE = {
    nnq.Linear: sparse_nn.Linear,
    nniq.LinearReLU: sparse_nn.LinearReLU,
    nnqd.Linear: sparse_nn.dynamic.Linear,
    nniqd.LinearReLU: sparse_nn.dynamic.LinearReLU,
}


def get_sparse_backend_config() -> BackendConfig:
    """BackendConfig for ``prepare_fx`` / ``convert_fx``: static and dynamic int8 linear,
    linear + relu fused, and every other pattern of torch's native (fbgemm/qnnpack) config."""
    return BackendConfig("torch_sparse_backend").set_backend_pattern_configs(
        get_native_backend_config().configs
    )


def convert_fx(
    graph_module: GraphModule,
    convert_custom_config: Any = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: Any = None,
    backend_config: BackendConfig | dict[str, Any] | None = None,
    keep_original_weights: bool = False,
    *,
    max_density: float = DEFAULT_MAX_DENSITY,
) -> GraphModule:
    """torch's ``convert_fx``, then sparse modules for every linear with ``sparse_params``.

    A linear whose weight has more than ``max_density`` of its blocks nonzero stays
    torch's dense quantized module (the sparse kernel would not be faster); see
    :func:`torch_sparse_backend.summary`. Fused linear + relu becomes
    ``qlinear_relu`` / ``qlinear_relu_dynamic``.
    """
    decisions: dict[str, SparsityDecision] = {}
    for name, mod in graph_module.named_modules():
        # The float modules that torch's lowering turns into a dense quantized linear.
        if not (isinstance(mod, nni.LinearReLU) or type(mod) is torch.nn.Linear):
            continue
        linear = float_linear(mod)
        if hasattr(linear, "sparse_params"):
            decisions[name] = decide(name, linear, max_density)
    quantized = _torch_convert_fx(
        graph_module,
        convert_custom_config=convert_custom_config,
        _remove_qconfig=_remove_qconfig,
        qconfig_mapping=qconfig_mapping,
        backend_config=backend_config if backend_config is not None else get_sparse_backend_config(),
        keep_original_weights=keep_original_weights,
    )
    modules = dict(quantized.named_modules())
    for name, decision in decisions.items():
        dense = modules.get(name)
        sparse_cls = _SPARSE_FOR_DENSE.get(type(dense))
        if sparse_cls is None or not decision.sparse:
            continue
        sparse = sparse_cls.from_quantized(dense, decision.block_shape)
        parent_name, _, attr = name.rpartition(".")
        setattr(quantized.get_submodule(parent_name) if parent_name else quantized, attr, sparse)
    # torch's GraphModule code spells a torch.Tensor annotation of forward's
    # arguments or result, written as a string under `from __future__ import
    # annotations`, as a name torch.jit.script cannot resolve; Tensor is
    # TorchScript's default type, so such annotations are dropped.
    for node in quantized.graph.nodes:
        if node.op in ("placeholder", "output") and node.type in (torch.Tensor, "torch.Tensor", "Tensor"):
            node.type = None
    quantized.recompile()
    return quantized

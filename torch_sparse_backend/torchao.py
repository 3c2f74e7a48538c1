"""torchao interop: ``quantize_`` configs and a lowering of PT2E graphs to our sparse ops.

torch 2.13 deprecates ``torch.ao.quantization``; its successors live in torchao:
eager ``torchao.quantization.quantize_(model, config)`` and the PT2E flow
(``torch.export`` + ``prepare_pt2e`` / ``convert_pt2e`` with a quantizer). This
module connects both to the kernels of this package:

- :class:`SparseInt8DynamicActivationInt8WeightConfig`, a config that
  ``quantize_`` accepts: each pruned ``nn.Linear`` becomes
  :class:`torch_sparse_backend.nn.dynamic.Linear`, every other linear goes to the
  dense config of the user's choice (or stays float).
- :func:`lower_pt2e`, a pass over the ``GraphModule`` that ``convert_pt2e``
  returns: each quantized linear whose weight is block sparse becomes one call
  of our plain-tensor op (``qlinear_uint8`` / ``qlinear_relu_uint8`` for static
  activations, ``qlinear_dynamic`` / ``qlinear_relu_dynamic`` for dynamic ones),
  its weight prepacked once and held as an attribute of the module.

torchao is imported only when the config class is first used, so
``lower_pt2e`` (which reads the graph, not torchao) runs without it.
"""

from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ._density import DEFAULT_MAX_DENSITY, block_density
from .nn._base import block_shape_of

__all__ = [
    "LoweringError",
    "LoweredLinear",
    "SparseInt8DynamicActivationInt8WeightConfig",
    "lower_pt2e",
]

logger = logging.getLogger("torch_sparse_backend")

_OPS = torch.ops.torch_sparse_backend
_TORCHAO_VERSION = "0.18.0"


def _import_torchao():
    try:
        import torchao.quantization  # noqa: F401
        from torchao.core.config import AOBaseConfig
        from torchao.quantization.transform_module import (
            _QUANTIZE_CONFIG_HANDLER,
            register_quantize_module_handler,
        )
    except ImportError as e:
        raise ImportError(
            "torch_sparse_backend.torchao.SparseInt8DynamicActivationInt8WeightConfig needs torchao "
            f"(tested with torchao {_TORCHAO_VERSION}): pip install torchao=={_TORCHAO_VERSION}. "
            f"Importing it failed with: {type(e).__name__}: {e}"
        ) from e
    return AOBaseConfig, register_quantize_module_handler, _QUANTIZE_CONFIG_HANDLER


# --------------------------------------------------------------------------------------
# quantize_ config
# --------------------------------------------------------------------------------------

_CONFIG_DOC = """Sparse int8 weights, int8 activations quantized per call: a torchao ``quantize_`` config.

``torchao.quantization.quantize_(model, SparseInt8DynamicActivationInt8WeightConfig(), filter_fn=...)``
turns each ``nn.Linear`` that ``filter_fn`` selects (default: every linear) and
that is block sparse into :class:`torch_sparse_backend.nn.dynamic.Linear`:

- the block shape is ``block_shape`` if given, else the layer's
  ``sparse_params["sparse_block_shape"]`` (left by ``torch.ao.pruning``); a layer
  with neither is not sparse;
- a layer whose fraction of nonzero blocks is above ``max_density`` is not sparse
  (the dense kernels are faster there);
- the weight is quantized symmetrically to int8 as torch's default weight
  observers do (:meth:`torch_sparse_backend.nn.dynamic.Linear.from_linear`), per
  output channel unless ``per_channel=False``.

Layers that are not sparse go to ``dense_config`` (another torchao config, e.g.
``torchao.quantization.Int8DynamicActivationInt8WeightConfig()``), or stay float
when it is None.
"""


_config_class = None


def _make_config_class():
    """Defines the config class on first use, as a subclass of torchao's ``AOBaseConfig``,
    and registers its handler with torchao's module-handler registry."""
    global _config_class
    if _config_class is not None:
        return _config_class
    AOBaseConfig, register_quantize_module_handler, handlers = _import_torchao()

    @dataclass
    class SparseInt8DynamicActivationInt8WeightConfig(AOBaseConfig):
        block_shape: tuple[int, int] | None = None
        max_density: float = DEFAULT_MAX_DENSITY
        per_channel: bool = True
        dense_config: Any = None

        def __post_init__(self):
            if self.block_shape is not None:
                shape = self.block_shape
                if not (isinstance(shape, (tuple, list)) and len(shape) == 2
                        and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
                    raise ValueError(f"block_shape must be a pair of ints (rows, columns), got {shape!r}")
                self.block_shape = (int(shape[0]), int(shape[1]))
            if not 0.0 <= self.max_density <= 1.0:
                raise ValueError(f"max_density must be in [0, 1], got {self.max_density}")
            if self.dense_config is not None:
                if not isinstance(self.dense_config, AOBaseConfig):
                    raise TypeError(
                        "dense_config must be a torchao config (an AOBaseConfig such as "
                        f"Int8DynamicActivationInt8WeightConfig()) or None, got {type(self.dense_config).__name__}"
                    )
                if type(self.dense_config) not in handlers:
                    raise ValueError(f"dense_config {type(self.dense_config).__name__} has no quantize_ handler")

    SparseInt8DynamicActivationInt8WeightConfig.__doc__ = _CONFIG_DOC
    SparseInt8DynamicActivationInt8WeightConfig.__module__ = __name__
    SparseInt8DynamicActivationInt8WeightConfig.__qualname__ = "SparseInt8DynamicActivationInt8WeightConfig"

    @register_quantize_module_handler(SparseInt8DynamicActivationInt8WeightConfig)
    def _transform(module: torch.nn.Module, config) -> torch.nn.Module:
        return _sparse_or_dense(module, config, handlers)

    _config_class = SparseInt8DynamicActivationInt8WeightConfig
    return _config_class


def _sparse_or_dense(module: torch.nn.Module, config, handlers) -> torch.nn.Module:
    """The quantize_ handler: our dynamic module for a sparse linear, else the dense config's result."""
    from .nn.dynamic import Linear as DynamicLinear

    if type(module) is torch.nn.Linear:
        shape = config.block_shape
        if shape is None and hasattr(module, "sparse_params"):
            shape = block_shape_of(module)
        if shape is not None:
            density = block_density(module.weight, shape)
            if density <= config.max_density:
                return DynamicLinear.from_linear(module, sparse_block_shape=shape, per_channel=config.per_channel)
            logger.info(
                "%s: %.1f%% of its %dx%d blocks are nonzero, above max_density=%.0f%%; left to the dense config",
                type(module).__name__, 100 * density, shape[0], shape[1], 100 * config.max_density,
            )
    if config.dense_config is None:
        return module
    return handlers[type(config.dense_config)](module, config.dense_config)


def __getattr__(name: str):
    if name == "SparseInt8DynamicActivationInt8WeightConfig":
        return _make_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# PT2E lowering
# --------------------------------------------------------------------------------------


class LoweringError(ValueError):
    """A graph (or a linear in it) that :func:`lower_pt2e` cannot lower; the graph is left unchanged."""


@dataclass(frozen=True)
class LoweredLinear:
    """One linear of the graph as :func:`lower_pt2e` saw it.

    ``mode`` is ``"static"``, ``"dynamic"``, ``"float"`` or ``"unsupported"`` (a quantization
    our ops do not run, on a layer that is not sparse); ``op`` names our op that
    replaced it, or is None for a layer left as it was, with ``reason`` saying why.
    """

    name: str
    mode: str
    block_shape: tuple[int, int] | None
    density: float | None
    op: str | None
    reason: str = ""


def _name(target) -> str:
    return str(target) if isinstance(target, torch._ops.OpOverload) else ""


def _is(node, *names: str) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and _name(node.target) in names


_DQ_TENSOR = "quantized_decomposed.dequantize_per_tensor.default"
_Q_TENSOR = "quantized_decomposed.quantize_per_tensor.default"
_DQ_CHANNEL = "quantized_decomposed.dequantize_per_channel.default"
_DQ_DYNAMIC = "quantized_decomposed.dequantize_per_tensor.tensor"
_Q_DYNAMIC = "quantized_decomposed.quantize_per_tensor.tensor"
_CHOOSE = "quantized_decomposed.choose_qparams.tensor"
_LINEAR = "aten.linear.default"
_RELU = ("aten.relu.default", "aten.relu_.default")

# Offset that maps an activation dtype's integer range onto uint8, the dtype of our ops.
_OFFSET = {torch.uint8: 0, torch.int8: 128}
_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _attr(gm: torch.fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a get_attr node reads, or None if ``node`` is not a get_attr of a tensor."""
    if not (isinstance(node, torch.fx.Node) and node.op == "get_attr"):
        return None
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part, None)
    return obj.detach() if isinstance(obj, torch.Tensor) else None


def _module_name(node: torch.fx.Node, index: int) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0]
    return f"linear#{index}"


@dataclass
class _Plan:
    info: LoweredLinear
    out: torch.fx.Node                  # the node whose uses our op's output takes over
    x: torch.fx.Node                    # static: quantized activation; dynamic: float activation
    relu: bool
    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None
    x_qparams: tuple[float, int, torch.dtype] | None = None
    y_qparams: tuple[float, int, int, int, torch.dtype] | None = None


def _weight(gm, dq, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, float64 scales) of a weight's dequantize node; LoweringError if unsupported."""
    if _is(dq, _DQ_CHANNEL):
        w_node, s_node, zp_node, axis, qmin, qmax, dtype = dq.args[:7]
        w, scales, zps = _attr(gm, w_node), _attr(gm, s_node), _attr(gm, zp_node)
        if scales is None or zps is None:
            raise LoweringError(f"{name}: the weight's per-channel scales and zero points are not constants")
        if axis != 0:
            raise LoweringError(f"{name}: the weight is quantized per channel along axis {axis}; "
                                "our ops need axis 0 (output channels)")
    elif _is(dq, _DQ_TENSOR):
        w_node, scale, zp, qmin, qmax, dtype = dq.args[:6]
        w = _attr(gm, w_node)
        if not isinstance(scale, (float, int)) or not isinstance(zp, int):
            raise LoweringError(f"{name}: the weight's scale and zero point are not constants")
        scales, zps = torch.tensor([float(scale)], dtype=torch.float64), torch.tensor([zp])
    else:
        raise LoweringError(f"{name}: the weight is not dequantized from int8 by a "
                            "quantized_decomposed.dequantize_per_tensor / dequantize_per_channel node")
    if w is None:
        raise LoweringError(f"{name}: the int8 weight is not a constant of the module (run convert_pt2e, "
                            "which folds it, on a model in eval mode)")
    if dtype != torch.int8 or w.dtype != torch.int8 or w.dim() != 2:
        raise LoweringError(f"{name}: the weight must be a 2-D int8 tensor, got {w.dtype} with {w.dim()} dims")
    if torch.as_tensor(zps).ne(0).any():
        raise LoweringError(f"{name}: the weight must be quantized symmetrically (zero point 0); our ops need it")
    return w, scales.to(torch.float64).reshape(-1)


def _activation(dq, name: str):
    """("static", quantized node, (scale, zp, dtype)) or ("dynamic", float node, None) or ("float", None, None)."""
    if _is(dq, _DQ_TENSOR):
        q, scale, zp, qmin, qmax, dtype = dq.args[:6]
        if dtype not in _OFFSET:
            raise LoweringError(f"{name}: activations of dtype {dtype} (our ops take uint8 or int8)")
        return "static", q, (float(scale), int(zp), dtype)
    if _is(dq, _DQ_DYNAMIC):
        q = dq.args[0]
        if _is(q, _Q_DYNAMIC):
            x, s, zp = q.args[:3]
            if all(
                isinstance(n, torch.fx.Node) and n.target is operator.getitem and _is(n.args[0], _CHOOSE)
                and n.args[0].args[0] is x for n in (s, zp)
            ):
                return "dynamic", x, None
        raise LoweringError(f"{name}: a dequantize_per_tensor.tensor activation that is not "
                            "choose_qparams -> quantize_per_tensor -> dequantize_per_tensor of one tensor")
    return "float", None, None


def _plan_linear(gm, node, index, shape_for, max_density) -> _Plan | LoweredLinear:
    name = _module_name(node, index)
    args = list(node.args) + [None] * (3 - len(node.args))
    act_dq, w_dq, bias_node = args[0], args[1], node.kwargs.get("bias", args[2])
    block_shape = shape_for(node, name)
    try:
        mode, x, x_qparams = _activation(act_dq, name)
    except LoweringError as e:
        if block_shape is not None:
            raise
        # A layer that is not sparse stays as it is, whatever its quantization.
        return LoweredLinear(name, "unsupported", None, None, None, str(e))
    if mode == "float":
        return LoweredLinear(name, "float", None, None, None, "its input is not quantized")
    if block_shape is None:
        return LoweredLinear(name, mode, None, None, None, "no block shape (not pruned)")
    relu = len(node.users) == 1 and _is(next(iter(node.users)), *_RELU)
    out = next(iter(node.users)) if relu else node
    users = list(out.users)
    if mode == "static" and not (len(users) == 1 and _is(users[0], _Q_TENSOR)):
        return LoweredLinear(name, mode, block_shape, None, None,
                             "its output is not quantized, or not only (our static ops have uint8 output)")
    w, scales = _weight(gm, w_dq, name)
    bias = None
    if bias_node is not None:
        bias = _attr(gm, bias_node)
        if bias is None:
            raise LoweringError(f"{name}: the bias is not a constant of the module")
        bias = bias.float()
    density = block_density(w, block_shape)
    if density > max_density:
        logger.info("%s: %.1f%% of its %dx%d blocks are nonzero, above max_density=%.0f%%; left dense",
                    name, 100 * density, block_shape[0], block_shape[1], 100 * max_density)
        return LoweredLinear(name, mode, block_shape, density, None, f"density above max_density={max_density}")
    if mode == "dynamic":
        op = "qlinear_relu_dynamic" if relu else "qlinear_dynamic"
        return _Plan(LoweredLinear(name, mode, block_shape, density, op), out, x, relu, w, scales, bias)
    q = users[0]
    y_scale, y_zp, qmin, qmax, y_dtype = q.args[1:6]
    if y_dtype not in _OFFSET:
        raise LoweringError(f"{name}: output dtype {y_dtype} (our ops produce uint8 or int8)")
    x_off, y_off = _OFFSET[x_qparams[2]], _OFFSET[y_dtype]
    if not 0 <= x_qparams[1] + x_off <= 255 or not 0 <= int(y_zp) + y_off <= 255:
        raise LoweringError(f"{name}: zero points {x_qparams[1]} (input) / {y_zp} (output) out of range")
    if not _RANGE[y_dtype][0] <= qmin <= qmax <= _RANGE[y_dtype][1]:
        raise LoweringError(f"{name}: output range [{qmin}, {qmax}] is not within {y_dtype}")
    op = "qlinear_relu_uint8" if relu else "qlinear_uint8"
    return _Plan(LoweredLinear(name, mode, block_shape, density, op), q, x, relu, w, scales, bias,
                 x_qparams, (float(y_scale), int(y_zp), int(qmin), int(qmax), y_dtype))


def _emit(graph: torch.fx.Graph, plan: _Plan, x: torch.fx.Node, packed_name: str,
          as_uint8: dict[torch.fx.Node, torch.fx.Node]) -> torch.fx.Node:
    """Inserts our op for ``plan`` before ``plan.out``, reading activation ``x``; returns its output node.

    ``as_uint8`` maps int8 outputs of earlier emitted ops to their uint8 form, so that
    consecutive int8 layers pass uint8 between them without converting back and forth.
    """
    aten = torch.ops.aten
    with graph.inserting_before(plan.out), warnings.catch_warnings():
        # fx warns for get_attr targets that are not parameters, buffers or modules;
        # the packed params are a TorchScript object, which export and compile read as a constant.
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node with no underlying")
        packed = graph.get_attr(packed_name)
        if plan.info.mode == "dynamic":
            return graph.call_function(getattr(_OPS, plan.info.op).default, (x, packed))
        x_scale, x_zp, x_dtype = plan.x_qparams
        y_scale, y_zp, qmin, qmax, y_dtype = plan.y_qparams
        if x_dtype == torch.int8 and x in as_uint8:
            x = as_uint8[x]
        elif x_dtype == torch.int8:
            # int8 -> uint8 with the zero point moved by 128: (x - zp) is unchanged.
            x = graph.call_function(aten.view.dtype, (x, torch.uint8))
            x = graph.call_function(aten.bitwise_xor.Scalar, (x, 128))
        off = _OFFSET[y_dtype]
        y = graph.call_function(getattr(_OPS, plan.info.op).default,
                                (x, x_scale, x_zp + _OFFSET[x_dtype], packed, y_scale, y_zp + off))
        if (qmin, qmax) != _RANGE[y_dtype]:
            # A narrower output range (reduce_range): clamping our [0, 255] result to it
            # equals clamping the rounded value to it directly.
            y = graph.call_function(aten.clamp.default, (y, qmin + off, qmax + off))
        if y_dtype == torch.int8:
            y_uint8 = y
            y = graph.call_function(aten.bitwise_xor.Scalar, (y, 128))
            y = graph.call_function(aten.view.dtype, (y, torch.int8))
            as_uint8[y] = y_uint8
        return y


def _shape_source(float_model, block_shape):
    if block_shape is not None:
        if not (isinstance(block_shape, (tuple, list)) and len(block_shape) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) for s in block_shape)):
            raise ValueError(f"block_shape must be a pair of ints (rows, columns), got {block_shape!r}")
        block_shape = (int(block_shape[0]), int(block_shape[1]))
    if float_model is not None and not isinstance(float_model, torch.nn.Module):
        raise TypeError(f"float_model must be the nn.Module that was exported, got {type(float_model).__name__}")

    def shape_for(node: torch.fx.Node, name: str):
        if float_model is not None and node.meta.get("nn_module_stack"):
            try:
                module = float_model.get_submodule(name)
            except AttributeError:
                module = None
            if module is not None and hasattr(module, "sparse_params"):
                return block_shape_of(module)
        return block_shape

    return shape_for


def lower_pt2e(
    model: torch.fx.GraphModule,
    float_model: torch.nn.Module | None = None,
    *,
    block_shape: tuple[int, int] | None = None,
    max_density: float = DEFAULT_MAX_DENSITY,
) -> torch.fx.GraphModule:
    """Replaces the block-sparse quantized linears of a ``convert_pt2e`` graph by our ops, in place.

    Args:
        model: the ``GraphModule`` returned by ``torchao.quantization.pt2e.quantize_pt2e.convert_pt2e``
            (X86InductorQuantizer or ArmInductorQuantizer configs: static or dynamic
            per-tensor activations, int8 or uint8; int8 weights per channel or per tensor).
        float_model: the float model that was exported; each linear whose module in it
            carries ``sparse_params`` (left by ``torch.ao.pruning``) uses that block shape.
            Modules are matched by name through the graph's ``nn_module_stack``.
        block_shape: the block shape of every other quantized linear; None leaves them dense.
        max_density: a linear with more than this fraction of nonzero blocks stays dense.

    Static ``dequantize -> linear [-> relu] -> quantize`` becomes
    ``qlinear_uint8`` / ``qlinear_relu_uint8`` on the quantized input with the graph's
    input and output qparams; dynamic ``choose_qparams -> quantize -> dequantize ->
    linear [-> relu]`` becomes ``qlinear_dynamic`` / ``qlinear_relu_dynamic`` on the float
    input. Each weight is prepacked once and held as an attribute ``_tsb_packed_<i>``; the
    int8 weights the graph no longer reads are dropped. Every other node is left as it is.

    Returns ``model``, with ``model.tsb_lowered`` listing every linear (:class:`LoweredLinear`).
    Raises :class:`LoweringError` (graph unchanged) if the graph holds no quantized linear or
    a sparse linear's quantization is one our ops cannot run.
    """
    if not isinstance(model, torch.fx.GraphModule):
        raise TypeError(f"lower_pt2e expects the torch.fx.GraphModule from convert_pt2e, got {type(model).__name__}")
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density}")
    if float_model is None and block_shape is None:
        raise ValueError("lower_pt2e needs the block shapes: pass float_model= (the exported model, whose "
                         "pruned linears carry sparse_params) and/or block_shape=(rows, columns)")
    shape_for = _shape_source(float_model, block_shape)
    graph = model.graph

    # Plan everything (and prepack) before touching the graph, so that an error leaves it unchanged.
    linears = [n for n in graph.nodes if _is(n, _LINEAR)]
    plans, infos = [], []
    for i, node in enumerate(linears):
        plan = _plan_linear(model, node, i, shape_for, max_density)
        if isinstance(plan, _Plan):
            plans.append(plan)
            infos.append(plan.info)
        else:
            infos.append(plan)
    if not any(info.mode != "float" for info in infos):
        if any(n.op == "call_function" and str(n.target).startswith("torch_sparse_backend.") for n in graph.nodes):
            raise LoweringError("the graph is lowered already: it calls torch_sparse_backend ops and has no "
                                "quantized linear left")
        raise LoweringError(
            f"no quantized linear found in the graph ({len(linears)} aten.linear node(s), none reading a "
            "quantized_decomposed dequantize): lower_pt2e takes the GraphModule returned by convert_pt2e"
        )
    packed = []
    for plan in plans:
        rb, cb = plan.info.block_shape
        try:
            packed.append(_OPS.qlinear_prepack_int8(plan.weight, plan.scales, plan.bias, rb, cb))
        except (RuntimeError, ValueError, TypeError) as e:
            raise LoweringError(f"{plan.info.name}: cannot prepack its weight: {e}") from e

    taken = 0
    replaced: dict[torch.fx.Node, torch.fx.Node] = {}
    as_uint8: dict[torch.fx.Node, torch.fx.Node] = {}
    for plan, p in zip(plans, packed):
        while hasattr(model, f"_tsb_packed_{taken}"):
            taken += 1
        name = f"_tsb_packed_{taken}"
        setattr(model, name, p)
        # A plan's activation can be the output an earlier plan replaced (consecutive sparse layers).
        new = _emit(graph, plan, replaced.get(plan.x, plan.x), name, as_uint8)
        plan.out.replace_all_uses_with(new)
        replaced[plan.out] = new
    if plans:
        read_before = {n.target for n in graph.nodes if n.op == "get_attr"}
        graph.eliminate_dead_code()
        read_after = {n.target for n in graph.nodes if n.op == "get_attr"}
        for target in read_before - read_after:
            *path, leaf = target.split(".")
            owner = model.get_submodule(".".join(path)) if path else model
            if isinstance(getattr(owner, leaf, None), torch.Tensor) and not isinstance(
                getattr(owner, leaf), torch.nn.Parameter
            ):
                delattr(owner, leaf)
        graph.lint()
        model.recompile()
    model.tsb_lowered = infos
    for info in infos:
        logger.info("lower_pt2e: %s", info)
    return model

"""The sparse linear ops as functions, with a low-overhead eager path.

Each function computes exactly what the op of the same name in
``torch.ops.torch_sparse_backend`` computes, with the same arguments in the same
order, the same result bits and the same errors::

    import torch_sparse_backend.functional as F
    y = F.qlinear(x_quint8, packed, y_scale, y_zero_point)   # == torch.ops.torch_sparse_backend.qlinear(...)

Calling an op through ``torch.ops`` has a Python overhead per call that is
larger than a small layer's whole product: torch looks up ``__torch_function__``
on every argument, and on the packed-params ``ScriptObject`` that lookup raises
and catches C++ exceptions. In eager mode these functions hand plain arguments (exactly
``torch.Tensor`` inputs, Python floats and ints, our packed params) to the
extension's direct entry points, which call the same op through the c10
dispatcher: autograd, dispatch modes and every registered kernel still apply.

Anything else goes through ``torch.ops`` unchanged: under ``torch.compile`` and
``torch.export``, while TorchScript scripts or the JIT tracer traces, under an
active ``TorchFunctionMode``, for tensor subclasses, and for arguments of other
types (for which the entry points raise :class:`UnsupportedArgumentError`).
Scripted code calls ``torch.ops`` directly.

The modules of :mod:`torch_sparse_backend.nn` run their ops through these
functions, so this file is the one place that tells the eager, traced and
scripted paths apart.
"""

from __future__ import annotations

import torch

from . import _extension

__all__ = [
    "UnsupportedArgumentError",
    "qlinear",
    "qlinear_dynamic",
    "qlinear_relu",
    "qlinear_relu_dynamic",
    "qlinear_relu_uint8",
    "qlinear_uint8",
]

_C = _extension.module()
_OPS = torch.ops.torch_sparse_backend
_Tensor = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_check_params_object = _C.check_params_object

#: Raised by the extension's direct entry points for arguments they do not
#: handle exactly like ``torch.ops`` (a ``TypeError`` subclass). The functions
#: here catch it and call ``torch.ops``; users never see it from them.
UnsupportedArgumentError = _C.UnsupportedArgumentError

# Each public function is TorchScript-compatible: TorchScript skips a block whose
# condition is exactly `not torch.jit.is_scripting()` and compiles only the
# torch.ops call after it. The eager work is in a helper that TorchScript never
# parses (it cannot parse try blocks, even in skipped code).
#
# The entry points themselves refuse to run under a TorchFunctionMode or the
# JIT tracer (checked in C++), so the helpers check only what C++ cannot see:
# torch.compile / torch.export, which trace this Python code, and the exact
# tensor type. Before falling back to torch.ops they refuse an uninitialized
# ScriptObject, on which torch.ops would crash.


def _eager_path(name: str, packed_index: int):
    """The eager work of function `name`: the extension's direct entry point where
    it applies, else torch.ops. `packed_index` is the packed params' position in
    the arguments."""
    direct = getattr(_C, name)

    def run(x, *args):
        if _is_compiling():
            return getattr(_OPS, name)(x, *args)
        if type(x) is _Tensor:
            try:
                return direct(x, *args)
            except UnsupportedArgumentError:
                pass
        _check_params_object(args[packed_index - 1])
        return getattr(_OPS, name)(x, *args)

    return run


_qlinear_eager = _eager_path("qlinear", 1)
_qlinear_relu_eager = _eager_path("qlinear_relu", 1)
_qlinear_dynamic_eager = _eager_path("qlinear_dynamic", 1)
_qlinear_relu_dynamic_eager = _eager_path("qlinear_relu_dynamic", 1)
_qlinear_uint8_eager = _eager_path("qlinear_uint8", 3)
_qlinear_relu_uint8_eager = _eager_path("qlinear_relu_uint8", 3)


def qlinear(
    x: torch.Tensor,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
    y_scale: float,
    y_zero_point: int,
) -> torch.Tensor:
    """Static sparse quantized linear: ``torch.ops.torch_sparse_backend.qlinear``.

    Args:
        x: ``torch.quint8`` tensor quantized per tensor, shape ``(*, in_features)``.
        packed: the prepacked weight and bias (``qlinear_prepack`` or
            ``qlinear_prepack_int8``).
        y_scale, y_zero_point: quantization parameters of the output.

    Returns:
        ``torch.quint8`` tensor of shape ``(*, out_features)``.
    """
    if not torch.jit.is_scripting():
        return _qlinear_eager(x, packed, y_scale, y_zero_point)
    return _OPS.qlinear(x, packed, y_scale, y_zero_point)


def qlinear_relu(
    x: torch.Tensor,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
    y_scale: float,
    y_zero_point: int,
) -> torch.Tensor:
    """:func:`qlinear` fused with ReLU: ``torch.ops.torch_sparse_backend.qlinear_relu``.

    Outputs below ``y_zero_point`` (negative values) become ``y_zero_point``.
    """
    if not torch.jit.is_scripting():
        return _qlinear_relu_eager(x, packed, y_scale, y_zero_point)
    return _OPS.qlinear_relu(x, packed, y_scale, y_zero_point)


def qlinear_dynamic(
    x: torch.Tensor,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
) -> torch.Tensor:
    """Dynamic sparse quantized linear: ``torch.ops.torch_sparse_backend.qlinear_dynamic``.

    Args:
        x: float32 tensor of shape ``(*, in_features)``, finite; quantized per
            call to full-range uint8 with torch's dynamic activation qparams.
        packed: the prepacked weight and bias.

    Returns:
        float32 tensor of shape ``(*, out_features)``.
    """
    if not torch.jit.is_scripting():
        return _qlinear_dynamic_eager(x, packed)
    return _OPS.qlinear_dynamic(x, packed)


def qlinear_relu_dynamic(
    x: torch.Tensor,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
) -> torch.Tensor:
    """:func:`qlinear_dynamic` fused with ReLU: ``torch.ops.torch_sparse_backend.qlinear_relu_dynamic``."""
    if not torch.jit.is_scripting():
        return _qlinear_relu_dynamic_eager(x, packed)
    return _OPS.qlinear_relu_dynamic(x, packed)


def qlinear_uint8(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
    y_scale: float,
    y_zero_point: int,
) -> torch.Tensor:
    """:func:`qlinear` on plain tensors: ``torch.ops.torch_sparse_backend.qlinear_uint8``.

    Args:
        x: uint8 tensor of shape ``(*, in_features)`` holding values quantized
            with ``x_scale`` and ``x_zero_point``.
        packed: the prepacked weight and bias.
        y_scale, y_zero_point: quantization parameters of the output.

    Returns:
        uint8 tensor of shape ``(*, out_features)``, the bits :func:`qlinear` gives.
    """
    if not torch.jit.is_scripting():
        return _qlinear_uint8_eager(x, x_scale, x_zero_point, packed, y_scale, y_zero_point)
    return _OPS.qlinear_uint8(x, x_scale, x_zero_point, packed, y_scale, y_zero_point)


def qlinear_relu_uint8(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    packed: torch.classes.torch_sparse_backend.SparseLinearPackedParams,
    y_scale: float,
    y_zero_point: int,
) -> torch.Tensor:
    """:func:`qlinear_uint8` fused with ReLU: ``torch.ops.torch_sparse_backend.qlinear_relu_uint8``."""
    if not torch.jit.is_scripting():
        return _qlinear_relu_uint8_eager(x, x_scale, x_zero_point, packed, y_scale, y_zero_point)
    return _OPS.qlinear_relu_uint8(x, x_scale, x_zero_point, packed, y_scale, y_zero_point)

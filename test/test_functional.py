"""torch_sparse_backend.functional: the ops as functions with a direct eager path.

Every function must give exactly what torch.ops gives (the same bits, the same
errors with the same messages), take the direct path for plain eager calls,
and leave everything else (modes, subclasses, tracing, scripting, compiling,
other argument types) to torch.ops.
"""

import math
import re
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from _reference import make_sparse_qweight, reference_engine
from torch.overrides import TorchFunctionMode
from torch.testing._internal.common_quantized import override_quantized_engine
from torch.utils._python_dispatch import TorchDispatchMode

import torch_sparse_backend as tsb
from torch_sparse_backend import functional as F

OPS = torch.ops.torch_sparse_backend
K, N = 40, 24

STATIC = ["qlinear", "qlinear_relu"]
UINT8 = ["qlinear_uint8", "qlinear_relu_uint8"]
DYNAMIC = ["qlinear_dynamic", "qlinear_relu_dynamic"]
ALL = STATIC + UINT8 + DYNAMIC


def _packed(per_channel=True, block=(1, 4), seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    w = make_sparse_qweight(N, K, block, 0.4, per_channel, g)
    b = torch.randn(N, generator=g) if bias else None
    return OPS.qlinear_prepack(w, b, *block)


def _args(name, packed, x):
    """Arguments of op `name` for float input `x` (quantized as the op needs)."""
    if name in STATIC:
        return (torch.quantize_per_tensor(x, 0.03, 121, torch.quint8), packed, 0.2, 117)
    if name in UINT8:
        xq = torch.quantize_per_tensor(x, 0.03, 121, torch.quint8)
        return (xq.int_repr(), 0.03, 121, packed, 0.2, 117)
    return (x, packed)


def _bits(y):
    if y.is_quantized:
        return (y.dtype, tuple(y.shape), y.q_scale(), y.q_zero_point(), y.int_repr())
    return (y.dtype, tuple(y.shape), y.contiguous().view(torch.uint8) if y.numel() else y)


def _same(a, b):
    a, b = _bits(a), _bits(b)
    return len(a) == len(b) and all(
        torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v for u, v in zip(a, b)
    )


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the exception is the result compared
        return ("error", type(e), str(e))


def _assert_same_outcome(name, args, expect_error=None):
    fast = _outcome(getattr(F, name), *args)
    ref = _outcome(getattr(OPS, name), *args)
    assert fast[0] == ref[0], (name, fast, ref)
    if fast[0] == "ok":
        assert _same(fast[1], ref[1]), name
    else:
        assert fast[1:] == ref[1:], (name, fast, ref)
    if expect_error is not None:
        assert fast[0] == "error" and issubclass(fast[1], expect_error), (name, fast)
    return fast


class _NoOps:
    """Stands in for torch.ops.torch_sparse_backend: any use is a test failure."""

    def __getattr__(self, name):
        raise AssertionError(f"functional fell back to torch.ops.torch_sparse_backend.{name}")


@pytest.fixture
def direct_only(monkeypatch):
    """Fails the test if a functional call leaves the direct path."""
    monkeypatch.setattr(F, "_OPS", _NoOps())


class _CountOps:
    """torch.ops.torch_sparse_backend, counting the calls that reach it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(OPS, name)


@pytest.fixture
def fallbacks(monkeypatch):
    counter = _CountOps()
    monkeypatch.setattr(F, "_OPS", counter)
    return counter.calls


def test_public_api():
    assert tsb.functional is F
    assert set(F.__all__) == {"UnsupportedArgumentError", *ALL}
    assert issubclass(F.UnsupportedArgumentError, TypeError)
    for name in ALL:
        assert getattr(F, name).__doc__, name


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("shape", [(0, K), (1, K), (7, K), (33, K), (2, 3, K), (K,)])
def test_equals_ops_bit_for_bit(name, per_channel, shape, direct_only):
    packed = _packed(per_channel, block=(1, 4) if per_channel else (8, 1), seed=len(shape))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0])) * 3
    args = _args(name, packed, x)
    y = getattr(F, name)(*args)
    assert _same(y, getattr(OPS, name)(*args))
    assert y.shape == (*shape[:-1], N)


@pytest.mark.parametrize("name", ALL)
def test_equals_ops_on_strided_input_and_without_bias(name, direct_only):
    packed = _packed(bias=False, block=(4, 4))
    x = torch.randn(K, 9).t()  # not contiguous
    assert not x.is_contiguous()
    args = _args(name, packed, x)
    if name in UINT8:
        args = (args[0].t().contiguous().t(), *args[1:])
        assert not args[0].is_contiguous()
    assert _same(getattr(F, name)(*args), getattr(OPS, name)(*args))


def test_uint8_and_quantized_variants_agree(direct_only):
    packed = _packed()
    x = torch.randn(5, K)
    for quantized, integer in (("qlinear", "qlinear_uint8"), ("qlinear_relu", "qlinear_relu_uint8")):
        yq = getattr(F, quantized)(*_args(quantized, packed, x))
        yu = getattr(F, integer)(*_args(integer, packed, x))
        assert torch.equal(yq.int_repr(), yu)


def test_relu_variants_clamp(direct_only):
    packed = _packed()
    x = torch.randn(6, K) * 5
    y = F.qlinear_relu_dynamic(x, packed)
    assert torch.equal(y, torch.relu(F.qlinear_dynamic(x, packed)))
    yq = F.qlinear_relu(*_args("qlinear_relu", packed, x))
    assert int(yq.int_repr().min()) >= 117


def test_integer_scale_and_large_zero_point_values(direct_only):
    # Python ints for float arguments convert as torch.ops converts them.
    packed = _packed()
    xq = torch.quantize_per_tensor(torch.randn(3, K), 0.03, 0, torch.quint8)
    assert _same(F.qlinear(xq, packed, 1, 255), OPS.qlinear(xq, packed, 1, 255))
    xu = xq.int_repr()
    assert _same(F.qlinear_uint8(xu, 1, 0, packed, 2, 0), OPS.qlinear_uint8(xu, 1, 0, packed, 2, 0))


def test_other_argument_types_fall_back_to_ops(fallbacks):
    # numpy scalars, bools, 0-dim tensors and huge ints are not what the direct
    # path converts: torch.ops decides what they mean.
    packed = _packed()
    xq = torch.quantize_per_tensor(torch.randn(3, K), 0.03, 100, torch.quint8)
    cases = [
        (xq, packed, np.float64(0.2), 117),
        (xq, packed, np.float32(0.2), 117),
        (xq, packed, 0.2, np.int64(117)),
        (xq, packed, 0.2, True),
        (xq, packed, torch.tensor(0.2), 117),
        (xq, packed, 0.2, 2**70),
        (xq, packed, 10**400, 117),
    ]
    for args in cases:
        fallbacks.clear()
        _assert_same_outcome("qlinear", args)
        assert fallbacks == ["qlinear"], args


@pytest.mark.parametrize("name", STATIC)
def test_static_errors_equal_ops(name, direct_only):
    packed = _packed()
    good = torch.randn(3, K)
    bad_inputs = [
        (torch.quantize_per_tensor(good, 0.1, 0, torch.qint8), TypeError),
        (good, TypeError),
        (torch.zeros(3, K, dtype=torch.uint8), TypeError),
        (torch.quantize_per_tensor(torch.randn(3, K + 1), 0.1, 3, torch.quint8), ValueError),
        (torch.quantize_per_tensor(torch.tensor(1.0), 0.1, 3, torch.quint8), ValueError),
        (torch.quantize_per_channel(good, torch.ones(K, dtype=torch.double) * 0.1,
                                    torch.zeros(K, dtype=torch.long), 1, torch.quint8), ValueError),
    ]
    for x, exc in bad_inputs:
        _assert_same_outcome(name, (x, packed, 0.2, 117), exc)
    xq = torch.quantize_per_tensor(good, 0.1, 3, torch.quint8)
    for scale in (0.0, -1.0, math.nan, math.inf, 1e-300, 1e-44):
        _assert_same_outcome(name, (xq, packed, scale, 117), ValueError)
        _assert_same_outcome(name, (xq[:0], packed, scale, 117), ValueError)
    for zp in (-1, 256, 2**40):
        _assert_same_outcome(name, (xq, packed, 0.2, zp), ValueError)


@pytest.mark.parametrize("name", UINT8)
def test_uint8_errors_equal_ops(name, direct_only):
    packed = _packed()
    xu = torch.zeros(3, K, dtype=torch.uint8)
    for x, exc in ((xu.float(), TypeError), (xu.to(torch.int8), TypeError), (xu[:, 1:], ValueError),
                   (torch.quantize_per_tensor(xu.float(), 0.1, 3, torch.quint8), TypeError)):
        _assert_same_outcome(name, (x, 0.03, 121, packed, 0.2, 117), exc)
    for x_scale, x_zp in ((math.nan, 0), (0.0, 0), (-0.1, 0), (0.1, -1), (0.1, 300)):
        _assert_same_outcome(name, (xu, x_scale, x_zp, packed, 0.2, 117), ValueError)
    for y_scale, y_zp in ((math.inf, 0), (0.1, 256)):
        _assert_same_outcome(name, (xu, 0.1, 0, packed, y_scale, y_zp), ValueError)


@pytest.mark.parametrize("name", DYNAMIC)
def test_dynamic_errors_equal_ops(name, direct_only):
    packed = _packed()
    good = torch.randn(3, K)
    cases = [
        (torch.quantize_per_tensor(good, 0.1, 3, torch.quint8), TypeError),
        (good.double(), TypeError),
        (good.half(), TypeError),
        (torch.randn(3, K - 1), ValueError),
        (torch.tensor(1.0), ValueError),
        (good.to_sparse(), TypeError),
        (good.to_sparse_csr(), TypeError),
    ]
    for bad in (math.nan, math.inf, -math.inf):
        x = good.clone()
        x[1, 2] = bad
        cases.append((x, ValueError))
    for x, exc in cases:
        _assert_same_outcome(name, (x, packed), exc)


@pytest.mark.parametrize("name", ALL)
def test_wrong_params_object_errors_equal_ops(name, fallbacks):
    # Not our packed params: torch.ops' own argument errors, word for word.
    with override_quantized_engine(reference_engine("fbgemm")):  # qnnpack where fbgemm's dense is x86 only
        dense = torch.ops.quantized.linear_prepack(
            torch.quantize_per_tensor(torch.randn(N, K), 0.1, 0, torch.qint8), None)
    wrong = [None, torch.randn(N, K), "packed", 3, dense, torch.jit.script(torch.nn.Linear(2, 2))._c]
    x = torch.randn(3, K)
    for obj in wrong:
        args = _args(name, obj, x)
        fallbacks.clear()
        _assert_same_outcome(name, args, Exception)
        assert fallbacks == [name], type(obj)


def test_wrong_python_types_equal_ops():
    packed = _packed()
    xq = torch.quantize_per_tensor(torch.randn(3, K), 0.1, 3, torch.quint8)
    for args in ((xq, packed, "0.2", 117), (xq, packed, 0.2, 1.5), (xq, packed, None, 117),
                 ([[1.0] * K], packed, 0.2, 117), (np.zeros((3, K)), packed, 0.2, 117)):
        _assert_same_outcome("qlinear", args, (TypeError, RuntimeError))
    for args in ((xq.int_repr(), "0.1", 0, packed, 0.2, 1), (xq.int_repr(), 0.1, 0.5, packed, 0.2, 1)):
        _assert_same_outcome("qlinear_uint8", args, (TypeError, RuntimeError))
    _assert_same_outcome("qlinear_dynamic", (xq.dequantize().tolist(), packed), (TypeError, RuntimeError))


def test_packed_params_from_copies_and_files_take_the_direct_path(direct_only):
    import copy
    import io

    module = tsb.nn.dynamic.Linear(K, N, 1, 4)
    module.set_weight_bias(make_sparse_qweight(N, K, (1, 4), 0.4, True, torch.Generator().manual_seed(2)),
                           torch.randn(N), 1, 4)
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(module), scripted)
    scripted.seek(0)
    pickled = io.BytesIO()
    torch.save(module, pickled)
    pickled.seek(0)
    copies = [copy.deepcopy(module), torch.jit.load(scripted), torch.load(pickled, weights_only=False)]
    x = torch.randn(5, K)
    expected = OPS.qlinear_dynamic(x, module._packed_params)
    for other in copies:
        assert type(other._packed_params) is torch.ScriptObject
        assert torch.equal(F.qlinear_dynamic(x, other._packed_params), expected)


def test_direct_entry_points_refuse_what_they_do_not_handle():
    # Called directly, the extension's functions raise UnsupportedArgumentError
    # (what functional catches) instead of guessing.
    C = tsb._extension.module()
    packed = _packed()
    x = torch.randn(3, K)

    class Sub(torch.Tensor):
        pass

    with pytest.raises(F.UnsupportedArgumentError, match="not exactly a torch.Tensor"):
        C.qlinear_dynamic(x.as_subclass(Sub), packed)
    with pytest.raises(F.UnsupportedArgumentError, match="not a torch.ScriptObject"):
        C.qlinear_dynamic(x, x)
    with pytest.raises(F.UnsupportedArgumentError, match="wrong number of arguments"):
        C.qlinear_dynamic(x)
    with pytest.raises(F.UnsupportedArgumentError, match="not a Python float"):
        C.qlinear(torch.quantize_per_tensor(x, 0.1, 3, torch.quint8), packed, np.float64(0.2), 1)
    with TorchFunctionMode(), pytest.raises(F.UnsupportedArgumentError, match="TorchFunctionMode"):
        C.qlinear_dynamic(x, packed)
    assert torch.equal(C.qlinear_dynamic(x, packed), OPS.qlinear_dynamic(x, packed))


class _RecordingFunctionMode(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class _RecordingDispatchMode(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append((func, [type(a) for a in args if not isinstance(a, (torch.Tensor, float, int))]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ALL)
def test_torch_function_mode_sees_the_op_as_through_ops(name):
    packed = _packed()
    args = _args(name, packed, torch.randn(4, K))
    with _RecordingFunctionMode() as fast_mode:
        y = getattr(F, name)(*args)
    with _RecordingFunctionMode() as ops_mode:
        y_ops = getattr(OPS, name)(*args)
    assert fast_mode.seen == ops_mode.seen == [getattr(OPS, name)]
    assert _same(y, y_ops)


@pytest.mark.parametrize("name", ALL)
def test_dispatch_mode_sees_the_direct_call(name, direct_only):
    # The direct path goes through the dispatcher, so Python dispatch modes
    # (and every other dispatch key) still see the op.
    packed = _packed()
    args = _args(name, packed, torch.randn(4, K))
    with _RecordingDispatchMode() as mode:
        y = getattr(F, name)(*args)
    op = getattr(OPS, name).default
    assert mode.seen == [(op, [torch.ScriptObject])]
    assert _same(y, getattr(OPS, name)(*args))


def test_kernel_registered_later_runs_on_the_direct_path(direct_only):
    packed = _packed()
    x = torch.randn(2, K)
    seen = []

    def override(x, packed):
        seen.append(type(packed))
        return torch.full((x.shape[0], N), 7.0)

    lib = torch.library.Library("torch_sparse_backend", "IMPL")
    try:
        lib.impl("qlinear_dynamic", override, "AutogradCPU")
        assert torch.equal(F.qlinear_dynamic(x, packed), torch.full((2, N), 7.0))
    finally:
        lib._destroy()
    assert seen == [torch.ScriptObject]
    assert torch.equal(F.qlinear_dynamic(x, packed), OPS.qlinear_dynamic(x, packed))


@pytest.mark.parametrize("name", ALL)
def test_tensor_subclass_goes_through_ops(name, fallbacks):
    calls = []

    class Logged(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    packed = _packed()
    args = _args(name, packed, torch.randn(4, K))
    sub_args = (args[0].as_subclass(Logged), *args[1:])
    y = getattr(F, name)(*sub_args)
    assert fallbacks == [name]
    assert calls == [getattr(OPS, name)]
    y_ops = getattr(OPS, name)(*sub_args)
    assert type(y) is type(y_ops) is Logged
    assert _same(y.as_subclass(torch.Tensor), y_ops.as_subclass(torch.Tensor))
    assert _same(y.as_subclass(torch.Tensor), getattr(OPS, name)(*args))


class _Wrapper(torch.nn.Module):
    """Calls functional `name` with the packed params as an attribute (as the tracer needs)."""

    def __init__(self, name, args):
        super().__init__()
        self.name = name
        self.packed = next(a for a in args if isinstance(a, torch.ScriptObject))
        self.scalars = [a for a in args[1:] if not isinstance(a, torch.ScriptObject)]

    def forward(self, x):
        fn = getattr(F, self.name)
        if self.name in UINT8:
            return fn(x, self.scalars[0], self.scalars[1], self.packed, self.scalars[2], self.scalars[3])
        return fn(x, self.packed) if self.name in DYNAMIC else fn(x, self.packed, *self.scalars)


@pytest.mark.parametrize("name", ["qlinear_dynamic", "qlinear_relu_uint8"])
def test_jit_trace_records_the_op(name):
    packed = _packed()
    args = _args(name, packed, torch.randn(4, K))
    module = _Wrapper(name, args)
    traced = torch.jit.trace(module, (args[0],))
    nodes = [n.kind() for n in traced.inlined_graph.nodes()]
    assert f"torch_sparse_backend::{name}" in nodes, nodes
    args2 = _args(name, packed, torch.randn(6, K))
    assert _same(traced(args2[0]), getattr(OPS, name)(*args2))


def test_scripted_callers_call_the_op_directly():
    packed = _packed()

    @torch.jit.script
    def scripted(x: torch.Tensor, p: torch.classes.torch_sparse_backend.SparseLinearPackedParams) -> torch.Tensor:
        return F.qlinear_relu_dynamic(x, p)

    x = torch.randn(3, K)
    assert torch.equal(scripted(x, packed), OPS.qlinear_relu_dynamic(x, packed))
    # The module's scripted forward calls functional, whose scripted body is the
    # bare op call: once inlined, the graph runs the op and nothing else.
    module = torch.jit.script(tsb.nn.dynamic.Linear(K, N, 1, 4))
    calls = [n.kind() for n in module.forward.inlined_graph.nodes() if n.kind() not in ("prim::Constant", "prim::GetAttr")]
    assert calls == ["torch_sparse_backend::qlinear_dynamic"]
    assert "ops.torch_sparse_backend.qlinear_dynamic" in torch.jit.script(F.qlinear_dynamic).code


def test_compile_traces_the_op_without_graph_break():
    packed = _packed()
    x = torch.randn(3, K)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: F.qlinear_dynamic(x, packed) * 2, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), OPS.qlinear_dynamic(x, packed) * 2)


def test_meta_tensors_take_the_direct_path(direct_only):
    # Quantized dtypes have no meta tensors: the integer and float ops only.
    packed = _packed()
    for name in UINT8 + DYNAMIC:
        args = _args(name, packed, torch.randn(2, 3, K))
        meta = args[0].to("meta")
        y = getattr(F, name)(meta, *args[1:])
        y_ops = getattr(OPS, name)(meta, *args[1:])
        assert y.device.type == y_ops.device.type == "meta"
        assert y.shape == y_ops.shape == (2, 3, N) and y.dtype == y_ops.dtype


def test_autograd_and_grad_modes_as_ops():
    packed = _packed()
    x = torch.randn(3, K, requires_grad=True)
    for name in DYNAMIC:
        y, y_ops = getattr(F, name)(x, packed), getattr(OPS, name)(x, packed)
        assert y.requires_grad == y_ops.requires_grad
        assert type(y.grad_fn) is type(y_ops.grad_fn)
        assert torch.equal(y.detach(), y_ops.detach())
        with warnings.catch_warnings(record=True) as fast_warnings:
            warnings.simplefilter("always")
            y.sum().backward()
        grad, x.grad = x.grad, None
        with warnings.catch_warnings(record=True) as ops_warnings:
            warnings.simplefilter("always")
            y_ops.sum().backward()
        assert [str(w.message) for w in fast_warnings] == [str(w.message) for w in ops_warnings]
        assert (grad is None) == (x.grad is None)
        if grad is not None:
            assert torch.equal(grad, x.grad)
        x.grad = None
        with torch.no_grad():
            assert F.qlinear_dynamic(x, packed).requires_grad == OPS.qlinear_dynamic(x, packed).requires_grad
        with torch.inference_mode():
            assert F.qlinear_dynamic(x.detach(), packed).is_inference()


def _cpp_warnings(text):
    """c10's warning lines on stderr, without their time stamps."""
    return [re.sub(r"^\[W\S+ \S+ ", "[W ", line) for line in text.splitlines() if line.startswith("[W")]


def test_vmap_and_cpp_warnings_as_through_ops(capfd, direct_only):
    # Under vmap the op runs through functorch's batching fallback, which warns
    # from C++ (TORCH_WARN). torch.ops installs no Python warning handler, so
    # the warning reaches c10's handler (stderr), not Python's warnings module;
    # the direct path must do the same (with -W error, a Python warning would
    # turn into an exception that torch.ops does not raise).
    packed = _packed()
    x = torch.randn(3, 2, K)
    outcome = {}
    for label, fn in (("direct", F.qlinear_dynamic), ("ops", OPS.qlinear_dynamic)):
        capfd.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = torch.vmap(lambda t, fn=fn: fn(t, packed))(x)
        outcome[label] = (y, [str(w.message) for w in caught], _cpp_warnings(capfd.readouterr().err))
    assert torch.equal(outcome["direct"][0], outcome["ops"][0])
    assert outcome["direct"][1:] == outcome["ops"][1:]
    assert outcome["ops"][2] and "batching rule" in outcome["ops"][2][0]
    # vmap runs the op once per sample, each quantized with its own qparams.
    assert torch.equal(outcome["direct"][0][1], OPS.qlinear_dynamic(x[1], packed))


def test_threads_share_packed_params(direct_only):
    packed = _packed(block=(8, 1))
    g = torch.Generator().manual_seed(5)
    cases = []
    for name in ALL:
        for m in (1, 9, 32):
            args = _args(name, packed, torch.randn(m, K, generator=g) * 2)
            cases.append((name, args, getattr(OPS, name)(*args)))
    errors = []

    def worker(offset):
        try:
            for i in range(300):
                name, args, expected = cases[(i + offset) % len(cases)]
                if not _same(getattr(F, name)(*args), expected):
                    errors.append(name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k * 5,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


_UNINITIALIZED = r"""
import torch
from torch.overrides import TorchFunctionMode
import torch_sparse_backend as tsb
from torch_sparse_backend import functional as F

class Sub(torch.Tensor):
    pass

class Through(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))

bad = torch.ScriptObject.__new__(torch.ScriptObject)
inputs = {"float": torch.randn(2, 8)}
inputs["quint8"] = torch.quantize_per_tensor(inputs["float"], 0.1, 3, torch.quint8)
inputs["uint8"] = inputs["quint8"].int_repr()
calls = {
    "qlinear": ("quint8", lambda x, p: F.qlinear(x, p, 0.1, 3)),
    "qlinear_relu": ("quint8", lambda x, p: F.qlinear_relu(x, p, 0.1, 3)),
    "qlinear_uint8": ("uint8", lambda x, p: F.qlinear_uint8(x, 0.1, 3, p, 0.1, 3)),
    "qlinear_relu_uint8": ("uint8", lambda x, p: F.qlinear_relu_uint8(x, 0.1, 3, p, 0.1, 3)),
    "qlinear_dynamic": ("float", F.qlinear_dynamic),
    "qlinear_relu_dynamic": ("float", F.qlinear_relu_dynamic),
}
for name, (kind, call) in calls.items():
    x = inputs[kind]
    for route in ("direct", "subclass", "mode"):
        try:
            if route == "direct":
                call(x, bad)
            elif route == "subclass":
                call(x.as_subclass(Sub), bad)
            else:
                with Through():
                    call(x, bad)
        except ValueError as e:
            assert "uninitialized torch.ScriptObject" in str(e), e
            print(name, route, "ValueError")
"""


def test_uninitialized_script_object_is_refused_without_crashing():
    # torch.ops crashes the process on ScriptObject.__new__(ScriptObject)
    # (a torch bug); functional must refuse it on every route. In a child
    # process, so that a regression fails this test instead of the run.
    out = subprocess.run(
        [sys.executable, "-c", _UNINITIALIZED], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    for name in ALL:
        for route in ("direct", "subclass", "mode"):
            assert f"{name} {route} ValueError" in lines, (name, route, out.stdout)

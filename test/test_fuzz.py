"""Property-based fuzzing of everything that crosses from Python or a file into C++.

The serialized packed-params state (version, sizes, block indices, values,
scales, bias) and the op arguments (shapes, dtypes, layouts, qparams) are
generated and mutated by hypothesis. An independent Python reading of the
format and of the op contracts decides whether each input is valid:

* valid: the op or the load must succeed, and the object must behave exactly
  as the weight the input describes (unpack, state, static and dynamic ops
  against the exact reference, on every kernel variant this CPU runs);
* invalid: the call must raise ValueError or TypeError (RuntimeError only
  where torch itself cannot convert a Python value to the schema's type).

The runs are derandomized and bounded; TSB_FUZZ_EXAMPLES raises the number of
examples per test for a longer local run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torch_sparse_backend  # noqa: F401
from _reference import make_sparse_qweight, reference_qlinear, reference_qlinear_dynamic

OPS = torch.ops.torch_sparse_backend
QUALNAME = "__torch__.torch.classes.torch_sparse_backend.SparseLinearPackedParams"
RUNNABLE = list(OPS._runnable_kernels())
BLOCK_SIZES = (1, 2, 4, 8, 16)
MAX_IN_FEATURES = 65793
MAX_OUT_FEATURES = 2**24
INT64_MAX = 2**63 - 1
EXAMPLES = int(os.environ.get("TSB_FUZZ_EXAMPLES", "200"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Scales that probe every boundary: float32 overflow and underflow, subnormals,
# zero, negative zero, NaN and infinities.
SPECIAL_SCALES = [
    math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-46, 1e-45,
    1.2e-38, 3.4e38, 3.5e38, 1e300,
]
scales_st = st.one_of(st.floats(1e-4, 4.0), st.sampled_from(SPECIAL_SCALES))


def _weight_case(draw, max_n=24, max_k=40):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    block = (draw(st.sampled_from(BLOCK_SIZES)), draw(st.sampled_from(BLOCK_SIZES)))
    density = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    per_channel = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    w = make_sparse_qweight(n, k, block, density, per_channel, g, wmax=127, wmin=-128)
    bias = torch.randn(n, generator=g) * 10 if draw(st.booleans()) else None
    return w, bias, block


def _load_state(state):
    obj = torch.ScriptObject.__new__(torch.ScriptObject)
    obj.__setstate__((state, QUALNAME))
    return obj


def _float32_positive(s: float) -> bool:
    with np.errstate(all="ignore"):
        f = np.float32(s)
    return math.isfinite(s) and s > 0 and bool(np.isfinite(f)) and f > 0


def _weight_scales_f32(w: torch.Tensor) -> np.ndarray:
    with np.errstate(all="ignore"):
        if w.qscheme() == torch.per_channel_affine:
            return w.q_per_channel_scales().numpy().astype(np.float32)
        return np.full(w.size(0), w.q_scale()).astype(np.float32)


def _is_dense_cpu(t) -> bool:
    return isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type == "cpu"


# ---------------------------------------------------------------------------
# The serialized state


def _bias_problem(bias, n: int) -> str:
    """"" when `bias` is a valid bias for n output channels (None or finite float32 [n])."""
    if bias is None:
        return ""
    if not isinstance(bias, torch.Tensor) or bias.is_quantized or bias.dtype != torch.float32:
        return "bias type"
    if not _is_dense_cpu(bias) or bias.dim() != 1 or bias.numel() != n:
        return "bias shape"
    if not torch.isfinite(bias).all():
        return "bias values"
    return ""


@dataclass
class Decoded:
    """The layer a valid state describes."""

    weight: torch.Tensor  # qint8 [N, K]
    bias: torch.Tensor | None
    block: tuple[int, int]


def decode_state(state) -> tuple[Decoded | None, str]:
    """Reads a version-1 state by the README's rules; (None, reason) when invalid."""
    version, sizes, tensors, bias = state
    if version != 1:
        return None, "version"
    if len(sizes) != 5:
        return None, "sizes"
    n, k, rb, cb, per_channel = sizes
    if per_channel not in (0, 1):
        return None, "qscheme flag"
    if n <= 0 or k <= 0 or rb not in BLOCK_SIZES or cb not in BLOCK_SIZES:
        return None, "shape"
    if k > MAX_IN_FEATURES or n > MAX_OUT_FEATURES:
        return None, "too large"
    if len(tensors) != 4:
        return None, "tensors"
    scales, row_ptr, col_idx, values = tensors
    for t, dtype in ((scales, torch.float64), (row_ptr, torch.int32), (col_idx, torch.int32), (values, torch.int8)):
        if not _is_dense_cpu(t) or t.dtype != dtype or t.dim() != 1:
            return None, "tensor type"
    nbr, nbc = -(-n // rb), -(-k // cb)
    rp, ci = row_ptr.tolist(), col_idx.tolist()
    if len(rp) != nbr + 1 or rp[0] != 0:
        return None, "row_ptr"
    if any(b < a or b - a > nbc for a, b in zip(rp, rp[1:])) or rp[-1] != len(ci):
        return None, "row_ptr"
    if values.numel() != len(ci) * rb * cb:
        return None, "values"
    dense = torch.zeros(nbr * rb, nbc * cb, dtype=torch.int8)
    blocks = values.reshape(-1, rb, cb)
    for br in range(nbr):
        cols = ci[rp[br] : rp[br + 1]]
        if any(c < 0 or c >= nbc for c in cols) or any(b <= a for a, b in zip(cols, cols[1:])):
            return None, "col_idx"
        for j, c in zip(range(rp[br], rp[br + 1]), cols):
            dense[br * rb : br * rb + rb, c * cb : c * cb + cb] = blocks[j]
    if dense[n:].any() or dense[:, k:].any():
        return None, "padding"
    dense = dense[:n, :k].contiguous()
    s = scales.tolist()
    if len(s) != (n if per_channel else 1) or not all(_float32_positive(v) for v in s):
        return None, "scales"
    problem = _bias_problem(bias, n)
    if problem:
        return None, problem
    if bias is not None:
        bias = bias.clone()
    if per_channel:
        w = torch._make_per_channel_quantized_tensor(dense, scales.clone(), torch.zeros(n, dtype=torch.long), 0)
    else:
        w = torch._make_per_tensor_quantized_tensor(dense, s[0], 0)
    return Decoded(w, bias, (rb, cb)), ""


ints_st = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([MAX_IN_FEATURES, MAX_IN_FEATURES + 1, MAX_OUT_FEATURES, MAX_OUT_FEATURES + 1, 2**31, -(2**63), INT64_MAX]),
    st.integers(-(2**63), INT64_MAX),
)


def _retyped(draw, t: torch.Tensor) -> torch.Tensor:
    """`t` with its dtype, shape, layout, device or contiguity changed."""
    kind = draw(st.sampled_from(["dtype", "2d", "0d", "strided", "sparse", "meta", "requires_grad"]))
    if kind == "requires_grad" and not t.is_floating_point():
        kind = "dtype"
    if kind == "dtype":
        dtypes = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.float32, torch.float64, torch.bool]
        return t.to(draw(st.sampled_from([d for d in dtypes if d != t.dtype])))
    if kind == "2d":
        return t.reshape(1, -1)
    if kind == "0d":
        return t[0] if t.numel() else torch.zeros((), dtype=t.dtype)
    if kind == "strided":  # same values, non-contiguous storage: still valid
        wide = torch.zeros(t.numel(), 3, dtype=t.dtype)
        wide[:, 1] = t
        return wide[:, 1]
    if kind == "sparse":
        return t.to_sparse()
    if kind == "meta":
        return t.to("meta")
    return t.clone().requires_grad_()  # valid: the data is only read


def _mutate_entries(draw, t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    if t.numel() == 0:
        return torch.cat([t, torch.ones(1, dtype=t.dtype)])
    i = draw(st.integers(0, t.numel() - 1))
    if t.dtype == torch.float64:
        t[i] = draw(scales_st)
    else:
        info = torch.iinfo(t.dtype)
        delta = draw(st.one_of(st.integers(-2, 2), st.integers(info.min, info.max)))
        t[i] = max(info.min, min(info.max, int(t[i]) + delta))
    return t


def _resized(draw, t: torch.Tensor) -> torch.Tensor:
    if draw(st.booleans()) and t.numel():
        return t[: draw(st.integers(0, t.numel() - 1))].clone()
    extra = torch.full((draw(st.integers(1, 20)),), draw(st.integers(-1, 3)), dtype=torch.int64).to(t.dtype)
    return torch.cat([t, extra])


def _bias_variant(draw, bias, n):
    kind = draw(st.sampled_from(["none", "length", "dtype", "nonfinite", "2d", "strided", "sparse", "meta", "quantized", "tensor_list"]))
    base = bias if bias is not None else torch.zeros(n)
    if kind == "none":
        return None
    if kind == "length":
        return torch.randn(draw(st.sampled_from([0, n - 1, n + 1])))
    if kind == "dtype":
        return base.to(draw(st.sampled_from([torch.float64, torch.float16, torch.int32, torch.bfloat16])))
    if kind == "nonfinite":
        b = base.clone()
        b[draw(st.integers(0, n - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return b
    if kind == "2d":
        return base.reshape(1, n)
    if kind == "strided":
        return torch.stack([base, base], 1)[:, 0]
    if kind == "sparse":
        return base.to_sparse()
    if kind == "meta":
        return base.to("meta")
    if kind == "quantized":
        return torch.quantize_per_tensor(base, 0.1, 0, torch.qint32)
    return [base]


@st.composite
def states(draw):
    """(state, python_types_broken): a valid state, then mutations of its fields."""
    w, bias, block = _weight_case(draw)
    version, sizes, tensors, b = OPS.qlinear_prepack(w, bias, *block).__getstate__()[0]
    packed_bias = b
    sizes, tensors = list(sizes), list(tensors)
    types_broken = False
    retyped = set()  # tensors no longer 1-D dense: their entries are not mutated further
    for _ in range(draw(st.sampled_from([1, 2, 0, 3]))):
        if types_broken:
            break
        what = draw(st.sampled_from(
            ["entry", "scale", "length", "retype", "bias", "size", "structure"]
        ))
        if what == "structure":
            what = draw(st.sampled_from(["sizes_length", "tensors_length", "python_type", "version"]))
        i = draw(st.integers(0, 3))
        editable = len(tensors) == 4 and i not in retyped
        if what == "version":
            version = draw(st.one_of(st.sampled_from([0, 2, -1]), st.integers(-(2**63), INT64_MAX)))
        elif what == "size" and sizes:
            sizes[draw(st.integers(0, len(sizes) - 1))] = draw(ints_st)
        elif what == "sizes_length":
            sizes = sizes[:-1] if draw(st.booleans()) else sizes + [draw(ints_st)]
        elif what == "entry" and editable and i > 0:
            tensors[i] = _mutate_entries(draw, tensors[i])
        elif what == "scale" and editable and i == 0:
            tensors[0] = _mutate_entries(draw, tensors[0])
        elif what == "length" and editable:
            tensors[i] = _resized(draw, tensors[i])
        elif what == "retype" and editable:
            tensors[i] = _retyped(draw, tensors[i])
            retyped.add(i)
        elif what == "bias":
            b = _bias_variant(draw, packed_bias, w.size(0))
            types_broken |= isinstance(b, list)
        elif what == "tensors_length":
            tensors = tensors[:-1] if draw(st.booleans()) else tensors + [tensors[0]]
        elif what == "python_type":
            broken = draw(st.sampled_from(["version_str", "sizes_tensor", "tensor_str", "version_big", "sizes_float"]))
            if broken == "version_str":
                version = "1"
            elif broken == "sizes_tensor":
                sizes = torch.tensor(sizes)
            elif broken == "tensor_str":
                tensors = tensors[:-1] + ["values"]
            elif broken == "version_big":
                version = 2**64
            else:
                sizes = [float(s) for s in sizes]
            types_broken = True
    return (version, sizes, tensors, b), types_broken


def _check_behaves_as(obj, d: Decoded, data) -> None:
    """Every observable of a loaded or prepacked object matches the decoded layer."""
    w_ref, b_ref, block = d.weight, d.bias, d.block
    n, k = w_ref.shape
    assert obj.out_features() == n and obj.in_features() == k
    assert obj.block_shape() == list(block)
    w, b, shape = OPS.qlinear_unpack(obj)
    assert shape == list(block)
    assert torch.equal(w.int_repr(), w_ref.int_repr())
    assert w.qscheme() == w_ref.qscheme()
    if w.qscheme() == torch.per_channel_affine:
        assert torch.equal(w.q_per_channel_scales(), w_ref.q_per_channel_scales())
    else:
        assert w.q_scale() == w_ref.q_scale()
    assert (b is None) == (b_ref is None)
    if b is not None:
        assert torch.equal(b, b_ref)
    again, reason = decode_state(obj.__getstate__()[0])
    assert again is not None, reason
    assert torch.equal(again.weight.int_repr(), w_ref.int_repr())

    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="input seed"))
    m = data.draw(st.integers(0, 9), label="rows")
    x = torch.randn(m, k, generator=g) * data.draw(st.sampled_from([1.0, 1e-3, 1e4]), label="input range")
    xq = torch.quantize_per_tensor(x, 0.05, 100, torch.quint8)
    f32 = np.float32
    with np.errstate(all="ignore"):
        atw = f32(0.05) * _weight_scales_f32(w_ref)
        requant = atw / f32(0.5)
        bias_np = np.zeros(n, f32) if b_ref is None else b_ref.numpy()
        static_ok = bool(np.all(np.isfinite(requant) & (requant > 0) & np.isfinite(bias_np / atw)))
    for kernel in RUNNABLE:
        p = OPS._with_kernel(obj, kernel)
        for relu in (False, True):
            static_op = OPS.qlinear_relu if relu else OPS.qlinear
            if static_ok:
                y = static_op(xq, p, 0.5, 7)
                assert torch.equal(y.int_repr(), reference_qlinear(xq, w_ref, b_ref, 0.5, 7, relu)), kernel
            else:
                with pytest.raises(ValueError, match="outside float32 range"):
                    static_op(xq, p, 0.5, 7)
            dynamic_op = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
            yd = dynamic_op(x, p)
            assert yd.shape == (m, n)
            if m:
                with np.errstate(all="ignore"):
                    ref = reference_qlinear_dynamic(x, w_ref, b_ref, relu)
                torch.testing.assert_close(yd, ref, rtol=0, atol=0, equal_nan=True, msg=kernel)


@FUZZ
@given(states(), st.data())
def test_fuzzed_state_is_rejected_clearly_or_loads_exactly(case, data):
    state, types_broken = case
    if types_broken:
        decoded, reason = None, "python types"
    else:
        decoded, reason = decode_state(state)
    if decoded is None:
        allowed = (ValueError, TypeError, RuntimeError) if types_broken else (ValueError, TypeError)
        with pytest.raises(allowed) as e:
            _load_state(state)
        assert str(e.value).strip(), "an empty error message"
        return
    _check_behaves_as(_load_state(state), decoded, data)


def test_state_fuzzer_reaches_both_outcomes():
    # The mutations must produce valid states as well as every kind of invalid one.
    outcomes = {}

    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(states())
    def collect(case):
        state, types_broken = case
        reason = "python types" if types_broken else decode_state(state)[1]
        outcomes[reason] = outcomes.get(reason, 0) + 1

    collect()
    expected = {"", "version", "sizes", "shape", "tensor type", "row_ptr", "col_idx", "values", "scales", "bias type", "bias shape", "python types"}
    assert expected <= set(outcomes), (sorted(expected - set(outcomes)), outcomes)


# ---------------------------------------------------------------------------
# Prepack arguments


@st.composite
def prepack_args(draw):
    w, bias, block = _weight_case(draw)
    n, k = w.shape
    problem = draw(st.sampled_from(["none", "none", "zero_point", "axis", "scale", "dtype", "block", "bias", "rank"]))
    expected_ok = problem == "none"
    if problem == "zero_point":
        zp = draw(st.integers(-128, 127).filter(lambda z: z != 0))
        w = torch._make_per_tensor_quantized_tensor(w.int_repr(), 0.1, zp)
    elif problem == "axis":
        w = torch._make_per_channel_quantized_tensor(
            w.int_repr(), torch.rand(k, dtype=torch.double) + 0.1, torch.zeros(k, dtype=torch.long), 1
        )
    elif problem == "scale":
        s = draw(scales_st)
        expected_ok = _float32_positive(s)
        if draw(st.booleans()):
            w = torch._make_per_tensor_quantized_tensor(w.int_repr(), s, 0)
        else:
            scales = torch.rand(n, dtype=torch.double) + 0.1
            scales[draw(st.integers(0, n - 1))] = s
            w = torch._make_per_channel_quantized_tensor(w.int_repr(), scales, torch.zeros(n, dtype=torch.long), 0)
    elif problem == "dtype":
        w = draw(st.sampled_from([
            w.dequantize(),
            w.int_repr(),
            torch.quantize_per_tensor(w.dequantize(), 0.1, 3, torch.quint8),
            torch.quantize_per_tensor(w.dequantize(), 0.1, 0, torch.qint32),
        ]))
    elif problem == "block":
        block = (draw(ints_st), draw(ints_st)) if draw(st.booleans()) else (block[0], draw(ints_st))
        expected_ok = block[0] in BLOCK_SIZES and block[1] in BLOCK_SIZES
    elif problem == "bias":
        bias = _bias_variant(draw, bias, n)
        expected_ok = not _bias_problem(bias, n)
    elif problem == "rank":
        w = w.reshape(draw(st.sampled_from([(n * k,), (1, n, k)])))
    return w, bias, block, expected_ok, problem == "bias" and isinstance(bias, list)


@FUZZ
@given(prepack_args(), st.data())
def test_fuzzed_prepack_rejects_clearly_or_packs_exactly(args, data):
    w, bias, block, expected_ok, types_broken = args
    if not expected_ok:
        allowed = (ValueError, TypeError, RuntimeError) if types_broken else (ValueError, TypeError)
        with pytest.raises(allowed) as e:
            OPS.qlinear_prepack(w, bias, *block)
        assert str(e.value).strip()
        return
    packed = OPS.qlinear_prepack(w, bias, *block)
    _check_behaves_as(packed, Decoded(w, bias, tuple(block)), data)


# ---------------------------------------------------------------------------
# Op arguments


@st.composite
def packed_layers(draw):
    w, bias, block = _weight_case(draw, max_n=12, max_k=20)
    return w, bias, OPS.qlinear_prepack(w, bias, *block)


def _shape(draw, k):
    lead = draw(st.lists(st.integers(0, 4), max_size=2))
    last = draw(st.sampled_from([k, k, k, k + 1, k - 1]))
    return tuple(lead) + (last,) if draw(st.integers(0, 19)) else ()


def _maybe_strided(draw, t: torch.Tensor) -> torch.Tensor:
    """`t`, or the same values in a non-contiguous view."""
    if t.dim() < 2 or (t.is_quantized and t.qscheme() != torch.per_tensor_affine):
        return t
    if not draw(st.booleans()):
        return t
    return t.transpose(0, -1).contiguous().transpose(0, -1)


@FUZZ
@given(packed_layers(), st.data())
def test_fuzzed_static_arguments(layer, data):
    w, bias, packed = layer
    n, k = w.shape
    draw = data.draw
    shape = _shape(draw, k)
    kind = draw(st.sampled_from(["quint8", "quint8", "quint8", "qint8", "qint32", "float32", "uint8", "per_channel"]))
    x_scale = draw(scales_st)
    x_zp = draw(st.one_of(st.integers(0, 255), st.integers(-5, 300)))
    y_scale = draw(scales_st)
    y_zp = draw(st.one_of(st.integers(0, 255), st.integers(-3, 300), st.sampled_from([-(2**63), INT64_MAX, 2**63, -(2**63) - 1])))
    relu = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    ints = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    if kind == "quint8":
        x = torch._make_per_tensor_quantized_tensor(ints, x_scale, x_zp)
    elif kind == "qint8":
        x = torch._make_per_tensor_quantized_tensor(ints.to(torch.int8), x_scale, 0)
    elif kind == "qint32":
        x = torch._make_per_tensor_quantized_tensor(ints.to(torch.int32), x_scale, 0)
    elif kind == "float32":
        x = ints.float()
    elif kind == "uint8":
        x = ints
    elif shape:  # quint8, but quantized per channel along the last axis
        c = shape[-1]
        x = torch._make_per_channel_quantized_tensor(
            ints, torch.ones(c, dtype=torch.double), torch.zeros(c, dtype=torch.long), len(shape) - 1
        )
    else:
        x = ints
    x = _maybe_strided(draw, x)
    f32 = np.float32
    with np.errstate(all="ignore"):
        w_scales = _weight_scales_f32(w)
        rb, cb = packed.block_shape()
        padded = -(-n // rb) * rb - n  # channels past N: weight scale 1, bias 0
        atw = f32(x_scale) * np.concatenate([w_scales, np.ones(padded, f32)])
        requant = atw / f32(y_scale)
        b = np.zeros(n + padded, f32) if bias is None else np.concatenate([bias.numpy(), np.zeros(padded, f32)])
        scales_ok = bool(np.all(np.isfinite(requant) & (requant > 0) & np.isfinite(b / atw)))
    valid = (
        kind == "quint8"
        and len(shape) >= 1
        and shape[-1] == k
        and math.isfinite(x_scale) and x_scale > 0
        and 0 <= x_zp <= 255
        and _float32_positive(y_scale)
        and 0 <= y_zp <= 255
        and scales_ok
    )
    op = OPS.qlinear_relu if relu else OPS.qlinear
    if valid:
        y = op(x, packed, y_scale, y_zp)
        assert y.shape == shape[:-1] + (n,)
        assert y.q_scale() == y_scale and y.q_zero_point() == y_zp
        assert torch.equal(y.int_repr(), reference_qlinear(x, w, bias, y_scale, y_zp, relu))
        return
    # An int beyond int64 cannot become the schema's int: torch's own conversion error.
    allowed = (ValueError, TypeError, RuntimeError) if not -(2**63) <= y_zp <= INT64_MAX else (ValueError, TypeError)
    with pytest.raises(allowed) as e:
        op(x, packed, y_scale, y_zp)
    assert str(e.value).strip()


SPECIAL_INPUTS = [math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, 0.0, -0.0, 1e-30, 65504.0]


@FUZZ
@given(packed_layers(), st.data())
def test_fuzzed_dynamic_arguments(layer, data):
    w, bias, packed = layer
    n, k = w.shape
    draw = data.draw
    shape = _shape(draw, k)
    kind = draw(st.sampled_from(["float32", "float32", "float32", "float64", "float16", "bfloat16", "int32", "quint8"]))
    seed = draw(st.integers(0, 2**31 - 1))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * draw(st.sampled_from([1.0, 1e-20, 1e20]))
    if x.numel() and draw(st.booleans()):
        flat = x.view(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIAL_INPUTS))
    if draw(st.integers(0, 9)) == 0:
        x = torch.full(shape, draw(st.sampled_from(SPECIAL_INPUTS[3:])))
    if kind == "quint8":
        x = torch.quantize_per_tensor(x.nan_to_num(), 0.1, 10, torch.quint8)
    elif kind != "float32":
        x = x.to(getattr(torch, kind))
    x = _maybe_strided(draw, x)
    relu = draw(st.booleans())
    op = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
    valid = kind == "float32" and len(shape) >= 1 and shape[-1] == k and bool(torch.isfinite(x).all())
    if not valid:
        with pytest.raises((ValueError, TypeError)) as e:
            op(x, packed)
        assert str(e.value).strip()
        return
    y = op(x, packed)
    assert y.shape == shape[:-1] + (n,)
    if y.numel():
        with np.errstate(all="ignore"):
            ref = reference_qlinear_dynamic(x, w, bias, relu)
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)

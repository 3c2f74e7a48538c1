"""Bad input gets a clear Python exception that names the problem."""

import io
import math

import pytest
import torch

import torch_sparse_backend  # noqa: F401

OPS = torch.ops.torch_sparse_backend
QUALNAME = "__torch__.torch.classes.torch_sparse_backend.SparseLinearPackedParams"


def _w(n=8, k=16, scale=0.1):
    return torch._make_per_tensor_quantized_tensor(
        torch.randint(-5, 6, (n, k), dtype=torch.int8), scale, 0
    )


@pytest.fixture
def packed():
    return OPS.qlinear_prepack(_w(), torch.randn(8), 1, 4)


def _qx(shape=(3, 16), dtype=torch.quint8):
    return torch.quantize_per_tensor(torch.randn(*shape), 0.1, 10 if dtype == torch.quint8 else 0, dtype)


@pytest.mark.parametrize(
    "weight, bias, block, exc, match",
    [
        (torch.randn(8, 16), None, (1, 4), TypeError, "torch.qint8, got an unquantized Float"),
        (torch.quantize_per_tensor(torch.randn(8, 16), 0.1, 3, torch.quint8), None, (1, 4), TypeError, "got QUInt8"),
        (torch._make_per_tensor_quantized_tensor(torch.ones(8, 16, dtype=torch.int8), 0.1, 2), None, (1, 4), ValueError, "zero point must be 0, got 2"),
        (torch._make_per_channel_quantized_tensor(torch.ones(8, 16, dtype=torch.int8), torch.ones(8, dtype=torch.double), torch.tensor([0, 0, 1, 0, 0, 0, 0, 0]), 0), None, (1, 4), ValueError, "zero points must all be 0"),
        (torch._make_per_channel_quantized_tensor(torch.ones(8, 16, dtype=torch.int8), torch.ones(16, dtype=torch.double), torch.zeros(16, dtype=torch.long), 1), None, (1, 4), ValueError, "along axis 0"),
        (_w(), torch.randn(7), (1, 4), ValueError, r"bias must have shape \[8\]"),
        (_w(), torch.randn(8, dtype=torch.double), (1, 4), TypeError, "bias must be a float32 tensor, got Double"),
        (_w(), torch.full((8,), math.nan), (1, 4), ValueError, "bias must be finite"),
        (_w(), None, (3, 4), ValueError, r"unsupported block shape \(3, 4\)"),
        (_w(), None, (1, 0), ValueError, "unsupported block shape"),
        (_w(), None, (-1, 4), ValueError, "unsupported block shape"),
        (_w(), None, (32, 1), ValueError, "unsupported block shape"),
        (_w(scale=0.0), None, (1, 4), ValueError, "scales must be finite and positive"),
        (_w(scale=math.inf), None, (1, 4), ValueError, "scales must be finite and positive"),
        (_w(scale=1e-60), None, (1, 4), ValueError, "scales must be finite and positive"),
        (torch._make_per_tensor_quantized_tensor(torch.ones(4, dtype=torch.int8), 0.1, 0), None, (1, 4), ValueError, "must be 2-D"),
        (torch._make_per_tensor_quantized_tensor(torch.ones(0, 4, dtype=torch.int8), 0.1, 0), None, (1, 4), ValueError, "positive sizes"),
        (torch._make_per_tensor_quantized_tensor(torch.ones(2, 70000, dtype=torch.int8), 0.1, 0), None, (1, 4), ValueError, "exceeds 65793"),
    ],
)
def test_prepack_rejects(weight, bias, block, exc, match):
    with pytest.raises(exc, match=match):
        OPS.qlinear_prepack(weight, bias, *block)


def test_static_op_rejects(packed):
    with pytest.raises(TypeError, match="quint8, got QInt8"):
        OPS.qlinear(_qx(dtype=torch.qint8), packed, 0.1, 0)
    with pytest.raises(TypeError, match="unquantized Float tensor .use qlinear_dynamic"):
        OPS.qlinear(torch.randn(3, 16), packed, 0.1, 0)
    with pytest.raises(ValueError, match="has 15 features .* in_features=16"):
        OPS.qlinear(_qx((3, 15)), packed, 0.1, 0)
    with pytest.raises(ValueError, match="at least one dimension"):
        OPS.qlinear(torch.quantize_per_tensor(torch.tensor(1.0), 0.1, 0, torch.quint8), packed, 0.1, 0)
    for scale in (0.0, -1.0, math.nan, math.inf, 1e-300):
        with pytest.raises(ValueError, match="output scale must be finite and positive"):
            OPS.qlinear(_qx(), packed, scale, 0)
    for zp in (-1, 256):
        with pytest.raises(ValueError, match=r"output zero point must be in \[0, 255\]"):
            OPS.qlinear_relu(_qx(), packed, 0.1, zp)
    with pytest.raises(ValueError, match="outside float32 range"):
        OPS.qlinear(_qx(), packed, 1e-44, 0)
    with pytest.raises(ValueError, match="outside float32 range"):  # also with no rows
        OPS.qlinear(_qx((0, 16)), packed, 1e-44, 0)


def test_static_scales_are_recomputed_and_rechecked_for_every_new_pair(packed):
    # The static ops keep the per-channel scales of the last (input, output)
    # scale pair; results must follow every change of the pair, and an
    # out-of-range pair must fail even right after a valid one.
    w, bias, block = OPS.qlinear_unpack(packed)
    x = torch.rand(5, 16, generator=torch.Generator().manual_seed(3)) * 4 - 2
    pairs = [(0.05, 0.1), (0.02, 0.1), (0.05, 0.3), (0.05, 0.1), (0.02, 0.1)]
    for x_scale, y_scale in pairs:
        xq = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)
        fresh = OPS.qlinear_prepack(w, bias, *block)  # no scales kept yet
        expected = OPS.qlinear(xq, fresh, y_scale, 7)
        got = OPS.qlinear(xq, packed, y_scale, 7)
        assert torch.equal(got.int_repr(), expected.int_repr()), (x_scale, y_scale)
        assert got.q_scale() == y_scale
        with pytest.raises(ValueError, match="outside float32 range"):
            OPS.qlinear(xq, packed, 1e-44, 0)


def test_dynamic_op_rejects(packed):
    with pytest.raises(TypeError, match="float32 tensor, got a quantized QUInt8 tensor"):
        OPS.qlinear_dynamic(_qx(), packed)
    with pytest.raises(TypeError, match="float32 tensor, got Double"):
        OPS.qlinear_relu_dynamic(torch.randn(3, 16, dtype=torch.double), packed)
    with pytest.raises(ValueError, match="has 17 features"):
        OPS.qlinear_dynamic(torch.randn(3, 17), packed)
    for sparse in (torch.randn(3, 16).to_sparse(), torch.randn(3, 16).to_sparse_csr()):
        with pytest.raises(TypeError, match="dense .strided. tensor"):
            OPS.qlinear_dynamic(sparse, packed)
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.randn(3, 16)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            OPS.qlinear_dynamic(x, packed)


def test_forced_unknown_kernel_is_rejected(packed):
    with pytest.raises(ValueError, match="unknown kernel variant 'nope'"):
        OPS._with_kernel(packed, "nope")


def _load_state(state):
    obj = torch.ScriptObject.__new__(torch.ScriptObject)
    obj.__setstate__((state, QUALNAME))
    return obj


def _good_state():
    w = torch._make_per_channel_quantized_tensor(
        torch.randint(-5, 6, (6, 10), dtype=torch.int8), torch.rand(6, dtype=torch.double) + 0.1,
        torch.zeros(6, dtype=torch.long), 0,
    )
    return OPS.qlinear_prepack(w, torch.randn(6), 2, 4).__getstate__()[0]


def _replace(state, sizes=None, tensors=None, version=None, bias="keep"):
    v, s, t, b = state
    return (
        v if version is None else version,
        list(s) if sizes is None else sizes,
        list(t) if tensors is None else tensors,
        b if isinstance(bias, str) else bias,
    )


def test_serialized_state_is_validated():
    state = _good_state()
    _, sizes, (scales, row_ptr, col_idx, values), bias = state
    loaded = _load_state(state)
    assert loaded.block_shape() == [2, 4]
    cases = [
        (_replace(state, version=2), "version 2"),
        (_replace(state, sizes=sizes[:4]), "expected 5 sizes"),
        (_replace(state, sizes=[6, 10, 2, 4, 7]), "bad qscheme flag"),
        (_replace(state, sizes=[-6, 10, 2, 4, 1]), "positive sizes"),
        (_replace(state, sizes=[6, 10, 5, 4, 1]), "unsupported block shape"),
        (_replace(state, sizes=[60, 10, 2, 4, 1]), "row_ptr has"),
        (_replace(state, sizes=[6, 10, 2, 4, 0]), "expected 1 weight scale"),
        (_replace(state, tensors=[scales, row_ptr, col_idx]), "expected 4 tensors"),
        (_replace(state, tensors=[scales.float(), row_ptr, col_idx, values]), "scales must be a 1-D float64"),
        (_replace(state, tensors=[scales, row_ptr.long(), col_idx, values]), "row_ptr must be a 1-D int32"),
        (_replace(state, tensors=[scales, row_ptr, col_idx, values.int()]), "values must be a 1-D int8"),
        (_replace(state, tensors=[scales, row_ptr, col_idx + 1000, values]), "out of range"),
        (_replace(state, tensors=[scales, row_ptr, col_idx - 1000, values]), "out of range"),
        (_replace(state, tensors=[scales, row_ptr * 2, col_idx, values]), "row_ptr|more blocks"),
        (_replace(state, tensors=[scales, row_ptr.flip(0), col_idx, values]), "row_ptr"),
        (_replace(state, tensors=[scales, row_ptr, col_idx, values[:-1]]), "values has"),
        (_replace(state, tensors=[scales * -1, row_ptr, col_idx, values]), "finite and positive"),
        (_replace(state, tensors=[scales * math.nan, row_ptr, col_idx, values]), "finite and positive"),
        (_replace(state, bias=torch.randn(5)), r"bias must have shape \[6\]"),
        (_replace(state, bias=torch.randn(6).double()), "bias must be a float32"),
    ]
    for bad, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            _load_state(bad)
    # Column indices that repeat within a block row would double-count.
    if int(row_ptr[1]) >= 2:
        dup = col_idx.clone()
        dup[1] = dup[0]
        with pytest.raises(ValueError, match="strictly increasing"):
            _load_state(_replace(state, tensors=[scales, row_ptr, dup, values]))


def test_nonzero_padding_in_state_is_rejected():
    # 6 x 10 with 4-wide blocks: columns 10, 11 of the last block column are padding.
    w = torch._make_per_tensor_quantized_tensor(torch.ones(6, 10, dtype=torch.int8), 0.1, 0)
    state = OPS.qlinear_prepack(w, None, 2, 4).__getstate__()[0]
    scales, row_ptr, col_idx, values = state[2]
    values = values.clone()
    values[-1] = 1  # last value of the last block lies beyond column 10
    with pytest.raises(ValueError, match="padding"):
        _load_state(_replace(state, tensors=[scales, row_ptr, col_idx, values]))


def test_wrong_types_in_state():
    with pytest.raises(RuntimeError, match="different number of elements|Expected"):
        _load_state(("x",))


def test_truncated_torchscript_archive():
    import torch_sparse_backend as tsb

    m = tsb.nn.dynamic.Linear(16, 8, 1, 4)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(m), buf)
    data = buf.getvalue()
    with pytest.raises(RuntimeError):
        torch.jit.load(io.BytesIO(data[: len(data) // 2]))

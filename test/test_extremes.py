"""Extreme numerics: non-finite dynamic input, empty, single-block and fully dense
weights, sizes of 1, and the largest in_features whose int32 accumulation is
exact, on every kernel variant this CPU runs, against the exact reference."""

import itertools
import math

import pytest
import torch

import torch_sparse_backend  # noqa: F401
from _reference import make_sparse_qweight, reference_qlinear, reference_qlinear_dynamic

OPS = torch.ops.torch_sparse_backend
QUALNAME = "__torch__.torch.classes.torch_sparse_backend.SparseLinearPackedParams"
RUNNABLE = list(OPS._runnable_kernels())
BLOCKS = [(1, 1), (1, 4), (4, 1), (2, 8), (8, 1), (8, 2), (16, 1), (1, 16), (4, 4), (16, 16)]


def _qweight(values: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    n = values.size(0)
    if per_channel:
        scales = torch.linspace(0.002, 0.02, n, dtype=torch.double)
        return torch._make_per_channel_quantized_tensor(values, scales, torch.zeros(n, dtype=torch.long), 0)
    return torch._make_per_tensor_quantized_tensor(values, 0.01, 0)


def _check_all_ops(w, bias, block, x, y_scale=0.7, y_zp=77):
    """Every op on every kernel equals the exact reference; returns the packed weight."""
    packed = OPS.qlinear_prepack(w, bias, *block)
    xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
    for kernel, relu in itertools.product(RUNNABLE, (False, True)):
        p = OPS._with_kernel(packed, kernel)
        where = f"{kernel} block={block} relu={relu} shape={tuple(w.shape)}"
        static_op = OPS.qlinear_relu if relu else OPS.qlinear
        dynamic_op = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
        ys = static_op(xq, p, y_scale, y_zp)
        assert torch.equal(ys.int_repr(), reference_qlinear(xq, w, bias, y_scale, y_zp, relu)), where
        yd = dynamic_op(x, p)
        if x.numel():
            assert torch.equal(yd, reference_qlinear_dynamic(x, w, bias, relu)), where
        else:
            assert yd.shape == (0, w.size(0)), where
    return packed


@pytest.mark.parametrize("op", [OPS.qlinear_dynamic, OPS.qlinear_relu_dynamic])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_dynamic_input_is_rejected(op, bad):
    packed = OPS.qlinear_prepack(_qweight(torch.ones(8, 16, dtype=torch.int8)), None, 1, 4)
    for x in (torch.randn(2, 3, 16), torch.full((1, 16), bad)):
        x.view(-1)[-1] = bad  # only the very last element is non-finite
        with pytest.raises(ValueError, match="NaN or infinity"):
            op(x, packed)


@pytest.mark.parametrize("block", BLOCKS)
def test_all_zero_weight(block):
    # No stored block: the output is the bias alone (and y_zp when there is none).
    g = torch.Generator().manual_seed(1)
    w = _qweight(torch.zeros(19, 37, dtype=torch.int8), per_channel=True)
    x = torch.randn(5, 37, generator=g)
    for bias in (None, torch.randn(19, generator=g) * 5):
        packed = _check_all_ops(w, bias, block, x)
        assert packed.num_blocks() == 0 and packed.density() == 0.0
        assert torch.equal(OPS.qlinear_unpack(packed)[0].int_repr(), w.int_repr())
    y = OPS.qlinear_dynamic(x, OPS.qlinear_prepack(w, None, *block))
    assert torch.equal(y, torch.zeros(5, 19))


def test_stored_all_zero_blocks_from_a_state():
    # A file may store blocks whose values are all zero: valid, and they add nothing.
    w = _qweight(torch.zeros(8, 16, dtype=torch.int8))
    version, sizes, (scales, _, _, _), bias = OPS.qlinear_prepack(w, None, 4, 4).__getstate__()[0]
    row_ptr = torch.tensor([0, 4, 6], dtype=torch.int32)
    col_idx = torch.tensor([0, 1, 2, 3, 1, 3], dtype=torch.int32)
    values = torch.zeros(6 * 16, dtype=torch.int8)
    obj = torch.ScriptObject.__new__(torch.ScriptObject)
    obj.__setstate__(((version, sizes, [scales, row_ptr, col_idx, values], bias), QUALNAME))
    assert obj.num_blocks() == 6
    x = torch.randn(3, 16)
    for kernel in RUNNABLE:
        p = OPS._with_kernel(obj, kernel)
        assert torch.equal(OPS.qlinear_dynamic(x, p), torch.zeros(3, 8))
        xq = torch.quantize_per_tensor(x, 0.1, 3, torch.quint8)
        assert torch.equal(OPS.qlinear(xq, p, 0.2, 9).int_repr(), torch.full((3, 8), 9, dtype=torch.uint8))


@pytest.mark.parametrize("block", BLOCKS)
def test_single_nonzero_block(block):
    # One block at the first position, then one at the last (cut by the weight's edge).
    rb, cb = block
    n, k = 21, 35
    x = torch.randn(6, k, generator=torch.Generator().manual_seed(2)) * 4
    nbr, nbc = -(-n // rb), -(-k // cb)
    for br, bc in ((0, 0), (nbr - 1, nbc - 1)):
        values = torch.zeros(n, k, dtype=torch.int8)
        tile = values[br * rb : br * rb + rb, bc * cb : bc * cb + cb]
        tile.copy_(torch.tensor([-128, 127, -127, 1], dtype=torch.int8).repeat(tile.numel())[: tile.numel()].view_as(tile))
        w = _qweight(values, per_channel=True)
        packed = _check_all_ops(w, torch.randn(n), block, x)
        assert packed.num_blocks() == 1


@pytest.mark.parametrize("block", BLOCKS)
def test_fully_dense_full_range_weight(block):
    g = torch.Generator().manual_seed(3)
    w = make_sparse_qweight(40, 72, block, 1.0, True, g, wmax=127, wmin=-128)
    w = _qweight(torch.where(w.int_repr() == 0, torch.tensor(-128, dtype=torch.int8), w.int_repr()), True)
    packed = _check_all_ops(w, torch.randn(40, generator=g), block, torch.randn(9, 72, generator=g) * 3)
    assert packed.density() == 1.0
    assert packed.num_blocks() == -(-40 // block[0]) * -(-72 // block[1])


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("n, k", [(1, 1), (1, 50), (50, 1)])
def test_sizes_of_one(block, n, k):
    g = torch.Generator().manual_seed(4)
    w = _qweight(torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g), per_channel=True)
    for m in (0, 1, 9):
        _check_all_ops(w, torch.randn(n, generator=g), block, torch.randn(m, k, generator=g))


@pytest.mark.parametrize("block", [(1, 4), (8, 1), (1, 1), (16, 16)])
@pytest.mark.parametrize("k", [65536, 65793])
def test_largest_exact_in_features(block, k):
    # x = 255 with x_zp = 0 against w = -128 in every column: |acc| = 255 * 128 * k,
    # within 2^31 up to k = 65793. Rows: all -128, all 127, alternating, random.
    n = 4
    w_int = torch.empty(n, k, dtype=torch.int8)
    w_int[0] = -128
    w_int[1] = 127
    w_int[2, 0::2], w_int[2, 1::2] = -128, 127
    w_int[3] = torch.randint(-128, 128, (k,), dtype=torch.int8, generator=torch.Generator().manual_seed(6))
    w = torch._make_per_tensor_quantized_tensor(w_int, 1.0, 0)
    xq = torch._make_per_tensor_quantized_tensor(torch.full((2, k), 255, dtype=torch.uint8), 1.0, 0)
    # Dynamic mode quantizes a constant positive input to exactly 255 with zero point 0.
    x = torch.ones(2, k)
    acc_row0 = -128 * 255 * k
    assert -(2**31) <= acc_row0 < 0
    packed = OPS.qlinear_prepack(w, None, *block)
    y_scale = 2.0**25
    for kernel in RUNNABLE:
        p = OPS._with_kernel(packed, kernel)
        ys = OPS.qlinear(xq, p, y_scale, 128)
        assert torch.equal(ys.int_repr(), reference_qlinear(xq, w, None, y_scale, 128, False)), kernel
        yd = OPS.qlinear_dynamic(x, p)
        assert torch.equal(yd, reference_qlinear_dynamic(x, w, None, False)), kernel
        # No wrap-around: the all -128 row stays negative, the all 127 row positive.
        assert (yd[:, 0] < 0).all() and (yd[:, 1] > 0).all(), kernel
        assert (ys.int_repr()[:, 0] == 64).all() and (ys.int_repr()[:, 1] > 128).all(), kernel


def test_in_features_beyond_exact_accumulation_is_rejected():
    w = torch._make_per_tensor_quantized_tensor(torch.ones(2, 65794, dtype=torch.int8), 0.1, 0)
    with pytest.raises(ValueError, match="in_features=65794 exceeds 65793"):
        OPS.qlinear_prepack(w, None, 1, 4)
    ok = OPS.qlinear_prepack(torch._make_per_tensor_quantized_tensor(torch.ones(2, 65793, dtype=torch.int8), 0.1, 0), None, 1, 4)
    version, sizes, tensors, bias = ok.__getstate__()[0]
    sizes = list(sizes)
    sizes[1] = 65794
    obj = torch.ScriptObject.__new__(torch.ScriptObject)
    with pytest.raises(ValueError, match="in_features=65794 exceeds 65793"):
        obj.__setstate__(((version, sizes, tensors, bias), QUALNAME))

"""torch.compile / torch.export, and the API on plain integer tensors (no quantized dtype)."""

import io
import warnings

import pytest
import torch

import torch_sparse_backend as tsb
from _reference import make_sparse_qweight, reference_qlinear, reference_qlinear_dynamic

OPS = torch.ops.torch_sparse_backend


def _float_linear(block=(1, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(48, 24)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, 48, generator=g))
        rb, cb = block
        keep = torch.rand(24 // rb, 48 // cb, generator=g) < 0.25
        linear.weight.mul_(keep.repeat_interleave(rb, 0).repeat_interleave(cb, 1))
    linear.sparse_params = {"sparse_block_shape": block}
    return linear


class StaticUint8(torch.nn.Module):
    """A static sparse layer driven through plain uint8 tensors."""

    def __init__(self, layer, x_scale, x_zero_point):
        super().__init__()
        self.layer = layer
        self.x_scale = x_scale
        self.x_zero_point = x_zero_point

    def forward(self, x):
        return self.layer.forward_uint8(x, self.x_scale, self.x_zero_point)


def _modules():
    dynamic = tsb.nn.dynamic.Linear.from_linear(_float_linear((1, 4)))
    dynamic_relu = tsb.nn.dynamic.LinearReLU.from_linear(_float_linear((8, 1)))
    static = StaticUint8(tsb.nn.Linear.from_linear(_float_linear((4, 4)), 0.05, 120), 0.03, 128)
    static_relu = StaticUint8(tsb.nn.LinearReLU.from_linear(_float_linear((1, 4)), 0.05, 120), 0.03, 128)
    x = torch.randn(5, 48)
    xu8 = torch.randint(0, 256, (5, 48), dtype=torch.uint8)
    return [("dynamic", dynamic, x), ("dynamic_relu", dynamic_relu, x),
            ("static", static, xu8), ("static_relu", static_relu, xu8)]


@pytest.mark.parametrize("index", range(4))
def test_compile_fullgraph(index):
    name, module, x = _modules()[index]
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="inductor")
    assert torch.equal(compiled(x), module(x)), name
    # A different batch size must not break the graph either.
    x2 = torch.cat([x, x[:2]])
    assert torch.equal(compiled(x2), module(x2)), name


@pytest.mark.parametrize("index", range(4))
def test_export_save_load(index):
    name, module, x = _modules()[index]
    program = torch.export.export(module, (x,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert torch.equal(loaded.module()(x), module(x)), name
    targets = {str(n.target) for n in loaded.graph.nodes if n.op == "call_function"}
    assert any("torch_sparse_backend" in t for t in targets), targets


def test_integer_api_equals_quantized_api():
    g = torch.Generator().manual_seed(3)
    for per_channel in (False, True):
        w_q = make_sparse_qweight(20, 36, (2, 4), 0.4, per_channel, g)
        bias = torch.randn(20, generator=g)
        scales = w_q.q_per_channel_scales() if per_channel else torch.tensor([w_q.q_scale()], dtype=torch.double)
        packed_q = OPS.qlinear_prepack(w_q, bias, 2, 4)
        packed_i = OPS.qlinear_prepack_int8(w_q.int_repr(), scales, bias, 2, 4)
        x = torch.randn(6, 36, generator=g)
        x_q = torch.quantize_per_tensor(x, 0.04, 131, torch.quint8)
        for relu in (False, True):
            op_q = OPS.qlinear_relu if relu else OPS.qlinear
            op_i = OPS.qlinear_relu_uint8 if relu else OPS.qlinear_uint8
            y_q = op_q(x_q, packed_q, 0.2, 90)
            y_i = op_i(x_q.int_repr(), 0.04, 131, packed_i, 0.2, 90)
            assert y_i.dtype == torch.uint8
            assert torch.equal(y_i, y_q.int_repr())
            assert torch.equal(y_i, reference_qlinear(x_q, w_q, bias, 0.2, 90, relu))
            dyn = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
            assert torch.equal(dyn(x, packed_i), dyn(x, packed_q))
            assert torch.equal(dyn(x, packed_i), reference_qlinear_dynamic(x, w_q, bias, relu))
        w_i, s_i, b_i, block = OPS.qlinear_unpack_int8(packed_i)
        assert torch.equal(w_i, w_q.int_repr()) and torch.equal(s_i, scales) and torch.equal(b_i, bias)
        assert list(block) == [2, 4]


def test_integer_path_emits_no_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dynamic = tsb.nn.dynamic.Linear.from_linear(_float_linear())
        static = tsb.nn.Linear.from_linear(_float_linear(), 0.05, 120)
        x = torch.randn(3, 48)
        xu8 = torch.randint(0, 256, (3, 48), dtype=torch.uint8)
        y = dynamic(x)
        yu8 = static.forward_uint8(xu8, 0.03, 128)
        w, scales, b = static.int8_weight_bias()
        packed = OPS.qlinear_prepack_int8(w, scales, b, 1, 4)
        OPS.qlinear_uint8(xu8, 0.03, 128, packed, 0.05, 120)
    assert y.shape == (3, 24) and yu8.dtype == torch.uint8


@pytest.mark.parametrize("per_channel", [True, False])
def test_from_linear_matches_torch_ao_quantization(per_channel):
    # from_linear's weight equals what the torch.ao flow produces with torch's
    # default symmetric weight observers, bit for bit.
    import torch.ao.quantization as tq

    linear = _float_linear()
    linear.qconfig = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    via_ao = tsb.nn.dynamic.Linear.from_float(linear)
    direct = tsb.nn.dynamic.Linear.from_linear(linear, per_channel=per_channel)
    w_ao, s_ao, b_ao = via_ao.int8_weight_bias()
    w_d, s_d, b_d = direct.int8_weight_bias()
    assert torch.equal(s_ao, s_d)
    assert torch.equal(w_ao, w_d)
    x = torch.randn(4, 48)
    assert torch.equal(via_ao(x), direct(x))


def test_integer_api_rejects_bad_input():
    w = torch.randint(-5, 6, (8, 16), dtype=torch.int8)
    with pytest.raises(TypeError, match="weight must be an int8 tensor, got Float"):
        OPS.qlinear_prepack_int8(w.float(), torch.ones(1), None, 1, 4)
    with pytest.raises(ValueError, match="1 element .per tensor. or out_features=8"):
        OPS.qlinear_prepack_int8(w, torch.ones(3), None, 1, 4)
    with pytest.raises(TypeError, match="float32 or float64"):
        OPS.qlinear_prepack_int8(w, torch.ones(8, dtype=torch.int32), None, 1, 4)
    with pytest.raises(ValueError, match="scales must be finite and positive"):
        OPS.qlinear_prepack_int8(w, torch.zeros(8), None, 1, 4)
    packed = OPS.qlinear_prepack_int8(w, torch.ones(8), None, 1, 4)
    with pytest.raises(TypeError, match="must be a uint8 tensor, got Float"):
        OPS.qlinear_uint8(torch.randn(2, 16), 0.1, 0, packed, 0.1, 0)
    with pytest.raises(ValueError, match=r"input zero point must be in \[0, 255\]"):
        OPS.qlinear_uint8(torch.zeros(2, 16, dtype=torch.uint8), 0.1, 300, packed, 0.1, 0)
    with pytest.raises(ValueError, match="input scale must be finite and positive"):
        OPS.qlinear_uint8(torch.zeros(2, 16, dtype=torch.uint8), float("nan"), 0, packed, 0.1, 0)

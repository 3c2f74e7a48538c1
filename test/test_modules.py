"""Modules, state_dict, serialization, convert mappings and cross-engine loading."""

import copy
import io

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.quantization as tq
from torch.testing._internal.common_quantized import override_quantized_engine

import torch_sparse_backend as tsb
from _reference import ExactQLinear, make_sparse_qweight, reference_engine, reference_qlinear, reference_qlinear_dynamic

ENGINES = [e for e in torch.backends.quantized.supported_engines if e != "none"]


def _static_module(block=(1, 4), per_channel=True, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    w = make_sparse_qweight(24, 40, block, 0.3, per_channel, g)
    b = torch.randn(24, generator=g) if bias else None
    m = tsb.nn.Linear(40, 24, *block, bias=bias)
    m.set_weight_bias(w, b, *block)
    m.scale, m.zero_point = 0.2, 117
    return m, w, b


def _dynamic_module(block=(8, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    w = make_sparse_qweight(24, 40, block, 0.3, False, g)
    b = torch.randn(24, generator=g)
    m = tsb.nn.dynamic.Linear(40, 24, *block)
    m.set_weight_bias(w, b, *block)
    return m, w, b


def _qx(batch=5, seed=1):
    x = torch.randn(batch, 40, generator=torch.Generator().manual_seed(seed))
    return x, torch.quantize_per_tensor(x, 0.03, 128, torch.quint8)


def _roundtrip_save(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _roundtrip_script(module):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    buf.seek(0)
    return torch.jit.load(buf)


def test_forward_matches_reference():
    m, w, b = _static_module()
    x, xq = _qx()
    assert torch.equal(m(xq).int_repr(), reference_qlinear(xq, w, b, 0.2, 117, False))
    d, wd, bd = _dynamic_module()
    assert torch.equal(d(x), reference_qlinear_dynamic(x, wd, bd, False))


def test_weight_bias_accessors():
    m, w, b = _static_module(block=(4, 4))
    assert torch.equal(m.weight().int_repr(), w.int_repr())
    assert torch.equal(m.weight().q_per_channel_scales(), w.q_per_channel_scales())
    assert torch.equal(m.bias(), b)
    w2, b2, rb, cb = m._weight_bias()
    assert (rb, cb) == (4, 4) and torch.equal(w2.int_repr(), w.int_repr()) and torch.equal(b2, b)
    m_nobias, _, _ = _static_module(bias=False)
    assert m_nobias.bias() is None


def test_repr_shows_block_shape_and_density():
    m, w, _ = _static_module(block=(1, 4))
    text = repr(m)
    blocks = w.int_repr().reshape(24, 10, 4).ne(0).any(-1).float().mean().item()
    assert "SparseQuantizedLinear(" in text
    assert "block_shape=(1, 4)" in text
    assert f"density={blocks:.3f}" in text
    assert "SparseQuantizedDynamicLinear(" in repr(_dynamic_module()[0])


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_state_dict_roundtrip(kind):
    if kind == "static":
        m, _, _ = _static_module(block=(2, 4))
        fresh = tsb.nn.Linear(40, 24, 1, 1)
    else:
        m, _, _ = _dynamic_module(block=(16, 1))
        fresh = tsb.nn.dynamic.Linear(40, 24, 1, 1)
    sd = m.state_dict()
    assert {"weight", "bias", "sparse_block_shape"} <= set(sd)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    sd = torch.load(buf)  # weights_only=True: a state_dict holds only tensors
    result = fresh.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    assert fresh.sparse_block_shape == m.sparse_block_shape
    assert torch.equal(fresh.weight().int_repr(), m.weight().int_repr())
    x, xq = _qx()
    if kind == "static":
        assert (fresh.scale, fresh.zero_point) == (m.scale, m.zero_point)
        assert torch.equal(fresh(xq).int_repr(), m(xq).int_repr())
    else:
        assert torch.equal(fresh(x), m(x))


def test_state_dict_inside_a_model_and_strict_errors():
    m, _, _ = _static_module()
    model = torch.nn.Sequential(tq.QuantStub(), m, tq.DeQuantStub())
    sd = model.state_dict()
    other = torch.nn.Sequential(tq.QuantStub(), tsb.nn.Linear(40, 24, 1, 4), tq.DeQuantStub())
    other.load_state_dict(sd)
    x, xq = _qx()
    assert torch.equal(other[1](xq).int_repr(), m(xq).int_repr())
    broken = dict(sd)
    del broken["1.sparse_block_shape"]
    with pytest.raises(RuntimeError, match="Missing key.*1.sparse_block_shape"):
        other.load_state_dict(broken)
    bad = dict(sd)
    bad["1.sparse_block_shape"] = torch.tensor([3, 4])
    with pytest.raises(RuntimeError, match="unsupported block shape"):
        other.load_state_dict(bad)
    newer = copy.deepcopy(sd)
    newer._metadata["1"]["version"] = 99
    with pytest.raises(RuntimeError, match="newer than"):
        other.load_state_dict(newer)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_deepcopy_save_load_and_script(kind):
    m = _static_module()[0] if kind == "static" else _dynamic_module()[0]
    x, xq = _qx()
    inp = xq if kind == "static" else x
    expected = m(inp)
    for other in (copy.deepcopy(m), _roundtrip_save(m), _roundtrip_script(m)):
        out = other(inp)
        if kind == "static":
            assert torch.equal(out.int_repr(), expected.int_repr())
            assert (out.q_scale(), out.q_zero_point()) == (expected.q_scale(), expected.q_zero_point())
        else:
            assert torch.equal(out, expected)
    scripted = _roundtrip_script(m)
    w, b, rb, cb = scripted._weight_bias()
    assert torch.equal(w.int_repr(), m.weight().int_repr()) and (rb, cb) == m.sparse_block_shape


class _Net(torch.nn.Module):
    def __init__(self, fused=False):
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc1 = torch.nn.Linear(40, 32)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(32, 16)
        self.dequant = tq.DeQuantStub()
        self.fused = fused

    def forward(self, x):
        x = self.quant(x)
        x = self.relu(self.fc1(x))
        return self.dequant(self.fc2(x))


def _pruned_net(block, fused=False):
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        w = net.fc1.weight
        rb, cb = block
        keep = (torch.rand(-(-32 // rb), -(-40 // cb)) < 0.3)
        w.mul_(keep.repeat_interleave(rb, 0).repeat_interleave(cb, 1)[:32, :40])
    net.fc1.sparse_params = {"sparse_block_shape": block}
    if fused:
        net = tq.fuse_modules(net, [["fc1", "relu"]])
    return net


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("block", [(1, 4), (8, 1)])
def test_static_convert_whole_model(block, fused):
    # Both models hold torch's dense modules (fc2; all of `dense`): they are built
    # and run where torch's dense int8 works. On x86: the x86 qconfig, converted
    # under the current engine, compared under fbgemm. Where those engines' dense
    # kernels do not run (aarch64): qnnpack for all three.
    net = _pruned_net(block, fused)
    net.qconfig = tq.get_default_qconfig(reference_engine("x86"))
    tq.prepare(net, inplace=True)
    calib = torch.randn(64, 40)
    net(calib)
    with override_quantized_engine(reference_engine()):
        dense = tq.convert(copy.deepcopy(net))
        ours = tq.convert(net, mapping=tsb.get_default_static_sparse_quant_module_mappings())
    assert isinstance(ours.quant, nnq.Quantize)
    assert type(ours.fc1) is (tsb.nn.LinearReLU if fused else tsb.nn.Linear)
    assert type(ours.fc2) is nnq.Linear  # no sparse_params: torch's dense module
    assert ours.fc1.sparse_block_shape == block
    x = torch.randn(8, 40)
    compare_engine = reference_engine("fbgemm")
    with override_quantized_engine(compare_engine):
        d = dense(x)
        o = ours(x)
        if compare_engine == "fbgemm":
            assert torch.equal(o, d)  # same requantization as dense fbgemm, bit for bit
        else:
            # Dense fbgemm semantics without fbgemm: the dense model with fc1
            # computed by the exact reference (fbgemm's requantization) equals
            # ours bit for bit, and that fc1 is within 1 unit of the dense one.
            exact = copy.deepcopy(dense)
            exact.fc1 = ExactQLinear(dense.fc1, relu=fused)
            assert torch.equal(o, exact(x))
            assert exact.fc1.max_diff_to_dense <= 1
    with override_quantized_engine(reference_engine()):
        loaded = _roundtrip_script(ours)
        assert torch.equal(loaded(x), o)


@pytest.mark.parametrize("fused", [False, True])
def test_dynamic_convert_whole_model(fused):
    net = _pruned_net((1, 4), fused)
    # fc2 becomes torch's dense module: converted and run where torch's dense int8 works.
    with override_quantized_engine(reference_engine()):
        ours = tq.quantize_dynamic(
            copy.deepcopy(net),
            {torch.nn.Linear: tq.default_dynamic_qconfig, nni.LinearReLU: tq.default_dynamic_qconfig},
            mapping=tsb.get_default_dynamic_sparse_quant_module_mappings(),
        )
        assert type(ours.fc1) is (tsb.nn.dynamic.LinearReLU if fused else tsb.nn.dynamic.Linear)
        assert type(ours.fc2) is nnqd.Linear
        x = torch.randn(8, 40)
        # Fused, ReLU runs inside the op; unfused, after it. Same values either way.
        expected = reference_qlinear_dynamic(x, ours.fc1.weight(), ours.fc1.bias(), relu=True)
        hidden = ours.fc1(x) if fused else torch.relu(ours.fc1(x))
        assert torch.equal(hidden, expected)
        loaded = _roundtrip_script(ours)
        assert torch.equal(loaded(x), ours(x))


def test_from_float_errors():
    plain = torch.nn.Linear(8, 8)
    plain.qconfig = tq.default_dynamic_qconfig
    with pytest.raises(ValueError, match="no sparse_params"):
        tsb.nn.dynamic.Linear.from_float(plain)
    with pytest.raises(TypeError, match="expects torch.nn.Linear"):
        tsb.nn.dynamic.Linear.from_float(torch.nn.Conv1d(1, 1, 1))
    plain.sparse_params = {"sparse_block_shape": (1, 4)}
    with pytest.raises(ValueError, match="no activation observer"):
        tsb.nn.Linear.from_float(plain)
    plain.sparse_params = {"sparse_block_shape": (1, "4")}
    with pytest.raises(ValueError, match="pair of ints"):
        tsb.nn.dynamic.Linear.from_float(plain)
    plain.sparse_params = {"sparse_block_shape": (3, 4)}
    with pytest.raises(ValueError, match="unsupported block shape"):
        tsb.nn.dynamic.Linear.from_float(plain)
    asym = torch.nn.Linear(8, 8)
    asym.sparse_params = {"sparse_block_shape": (1, 4)}
    asym.qconfig = tq.QConfig(
        activation=tq.default_observer,
        weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine),
    )
    with torch.no_grad():
        asym.weight.uniform_(0.1, 1.0)
    with pytest.raises(ValueError, match="zero point 0"):
        tsb.nn.dynamic.Linear.from_float(asym)


def test_from_reference():
    import torch.ao.nn.quantized.reference as nnqr

    float_linear = torch.nn.Linear(40, 24)
    with torch.no_grad():
        float_linear.weight[:, ::2] = 0
    qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": 0.01, "zero_point": 0}
    ref = nnqr.Linear.from_float(float_linear, qparams)
    ref.sparse_params = {"sparse_block_shape": (1, 2)}
    m = tsb.nn.Linear.from_reference(ref, 0.5, 100)
    assert m.sparse_block_shape == (1, 2) and (m.scale, m.zero_point) == (0.5, 100)
    assert torch.equal(m.weight().int_repr(), ref.get_quantized_weight().int_repr())
    d = tsb.nn.dynamic.Linear.from_reference(ref, sparse_block_shape=(4, 1))
    assert d.sparse_block_shape == (4, 1)
    x = torch.randn(3, 40)
    assert torch.equal(d(x), reference_qlinear_dynamic(x, ref.get_quantized_weight(), ref.bias, False))


def test_scripted_model_runs_under_every_engine():
    # torch's own sparse modules saved under fbgemm fail under qnnpack; ours run
    # and give identical results under every engine.
    m, _, _ = _static_module()
    d, _, _ = _dynamic_module()
    x, xq = _qx()
    outputs = []
    for save_engine in ENGINES:
        with override_quantized_engine(save_engine):
            buf_s, buf_d = io.BytesIO(), io.BytesIO()
            torch.jit.save(torch.jit.script(m), buf_s)
            torch.jit.save(torch.jit.script(d), buf_d)
        for load_engine in ENGINES:
            with override_quantized_engine(load_engine):
                buf_s.seek(0)
                buf_d.seek(0)
                outputs.append((torch.jit.load(buf_s)(xq).int_repr(), torch.jit.load(buf_d)(x)))
    for s, dy in outputs[1:]:
        assert torch.equal(s, outputs[0][0]) and torch.equal(dy, outputs[0][1])

"""torchao interop: quantize_ with our config, and PT2E graphs lowered to our ops.

The references are this package's torch.ao path on the same int8 weights and
qparams: our quantized-dtype modules (tsb.nn.Linear / LinearReLU on quint8
tensors, tsb.nn.dynamic.*) and, for layers that stay dense, the converted
graph's own nodes, run by an fx Interpreter from the same inputs.
"""

import copy
import io

import pytest
import torch
import torch.ao.quantization as tq

import torch_sparse_backend as tsb
from torch_sparse_backend.torchao import LoweringError, lower_pt2e

torchao = pytest.importorskip("torchao", reason="the README's test command installs torchao")  # noqa: F841
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402
from torchao.quantization.pt2e.quantizer import arm_inductor_quantizer as aiq  # noqa: E402
from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq  # noqa: E402

from torch_sparse_backend.torchao import SparseInt8DynamicActivationInt8WeightConfig  # noqa: E402

QD = torch.ops.quantized_decomposed


def _prune(linear, block, keep, g):
    rb, cb = block
    n, k = linear.weight.shape
    mask = (torch.rand(n // rb, k // cb, generator=g) < keep).repeat_interleave(rb, 0).repeat_interleave(cb, 1)
    with torch.no_grad():
        linear.weight.mul_(mask)
    linear.sparse_params = {"sparse_block_shape": block}


class Net(torch.nn.Module):
    """l1 (1x4 blocks) -> relu -> l2 (8x1 blocks) -> l3 (dense)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = torch.nn.Linear(64, 96)
        self.l2 = torch.nn.Linear(96, 80)
        self.l3 = torch.nn.Linear(80, 32)
        with torch.no_grad():
            for layer in (self.l1, self.l2, self.l3):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.2)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
        _prune(self.l1, (1, 4), 0.3, g)
        _prune(self.l2, (8, 1), 0.3, g)

    def forward(self, x):
        return self.l3(self.l2(torch.relu(self.l1(x))))


def _inputs(seed=1, m=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, 64, generator=g), torch.randn(m + 3, 64, generator=g)


def _quantizer(kind, dynamic):
    if kind.startswith("x86"):
        q = xiq.X86InductorQuantizer()
        q.set_global(xiq.get_default_x86_inductor_quantization_config(
            is_dynamic=dynamic, reduce_range=kind == "x86_reduce_range"))
    else:
        q = aiq.ArmInductorQuantizer()
        q.set_global(aiq.get_default_arm_inductor_quantization_config(is_dynamic=dynamic))
    return q


def _converted(model, kind, dynamic, x):
    exported = torch.export.export(model, (x,)).module()
    prepared = prepare_pt2e(exported, _quantizer(kind, dynamic))
    prepared(x)                                         # calibrate
    return convert_pt2e(prepared)


def _linears(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.linear.default]


def _tensor(gm, node):
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


def _layer(gm, linear):
    """The int8 weight, scales, bias and (static) qparams of one quantized linear of a converted graph."""
    act, wdq, bias = linear.args
    if wdq.target == QD.dequantize_per_channel.default:
        scales = _tensor(gm, wdq.args[1]).double()
    else:
        scales = torch.tensor([wdq.args[1]], dtype=torch.double)
    layer = dict(w=_tensor(gm, wdq.args[0]), scales=scales, bias=_tensor(gm, bias))
    users = list(linear.users)
    layer["relu"] = users[0].target == torch.ops.aten.relu.default
    out = users[0] if layer["relu"] else linear
    layer["out"] = out
    if act.target == QD.dequantize_per_tensor.default:
        layer["x_qparams"] = act.args[1], act.args[2], act.args[5]
        layer["x_range"] = act.args[3], act.args[4]
        (q,) = out.users
        if q.target == QD.quantize_per_tensor.default:
            layer["y_qparams"] = q.args[1], q.args[2], q.args[5]
            layer["y_range"] = q.args[3], q.args[4]
            layer["out"] = q
    return layer


def _run_with(gm, x, values):
    """Runs graph ``gm`` on ``x`` with the nodes named in ``values`` producing the given tensors."""

    class Substitute(torch.fx.Interpreter):
        def run_node(self, n):
            return values[n.name] if n.name in values else super().run_node(n)

    return Substitute(gm).run(x)


def _static_reference(layer, block, x_int):
    """Our torch.ao path: the static quantized-dtype module on the same weight and qparams."""
    x_scale, x_zp, x_dtype = layer["x_qparams"]
    y_scale, y_zp, y_dtype = layer["y_qparams"]
    x_off, y_off = (128 if x_dtype == torch.int8 else 0), (128 if y_dtype == torch.int8 else 0)
    cls = tsb.nn.LinearReLU if layer["relu"] else tsb.nn.Linear
    w = layer["w"]
    module = cls(w.shape[1], w.shape[0], *block)
    module.set_int8_weight_bias(w, layer["scales"], layer["bias"], *block)
    module.scale, module.zero_point = y_scale, y_zp + y_off
    x_u8 = (x_int.to(torch.int16) + x_off).to(torch.uint8)
    x_q = torch._make_per_tensor_quantized_tensor(x_u8, x_scale, x_zp + x_off)
    y = (module(x_q).int_repr().to(torch.int16) - y_off).clamp(*layer["y_range"])   # reduce_range: 0..127
    return y.to(y_dtype)


def _dynamic_reference(layer, block, x):
    cls = tsb.nn.dynamic.LinearReLU if layer["relu"] else tsb.nn.dynamic.Linear
    w = layer["w"]
    module = cls(w.shape[1], w.shape[0], *block)
    module.set_int8_weight_bias(w, layer["scales"], layer["bias"], *block)
    return module(x)


def _reference(converted, x, dynamic):
    """The converted graph's output with l1 and l2 run by our torch.ao-path modules."""
    l1, l2, _ = (_layer(converted, n) for n in _linears(converted))
    if dynamic:
        y2 = _dynamic_reference(l2, (8, 1), _dynamic_reference(l1, (1, 4), x))
    else:
        x_scale, x_zp, x_dtype = l1["x_qparams"]
        x_int = QD.quantize_per_tensor(x, x_scale, x_zp, *l1["x_range"], x_dtype)   # the graph's own quantization
        y2 = _static_reference(l2, (8, 1), _static_reference(l1, (1, 4), x_int))
    return _run_with(converted, x, {l2["out"].name: y2})


def _our_ops(gm):
    return sorted(str(n.target) for n in gm.graph.nodes
                  if n.op == "call_function" and "torch_sparse_backend" in str(n.target))


@pytest.mark.parametrize("kind", ["x86", "arm", "x86_reduce_range"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_lower_pt2e_equals_torch_ao_path(kind, dynamic):
    model = Net().eval()
    x, x2 = _inputs()
    converted = _converted(model, kind, dynamic, x)
    dense_before = _layer(converted, _linears(converted)[2])
    lowered = lower_pt2e(copy.deepcopy(converted), model)

    ops = ["qlinear_relu_dynamic", "qlinear_dynamic"] if dynamic else ["qlinear_relu_uint8", "qlinear_uint8"]
    assert [(i.name, i.op) for i in lowered.tsb_lowered] == [("l1", ops[0]), ("l2", ops[1]), ("l3", None)]
    assert _our_ops(lowered) == sorted(f"torch_sparse_backend.{op}.default" for op in ops)
    # The dense layer is untouched: same nodes, same int8 weight and qparams.
    (dense,) = _linears(lowered)
    dense_after = _layer(lowered, dense)
    for key in ("w", "scales", "bias", "relu"):
        assert torch.equal(torch.as_tensor(dense_after[key]), torch.as_tensor(dense_before[key])), key
    assert dense_after.get("x_qparams") == dense_before.get("x_qparams")
    # The int8 weights of the lowered layers are dropped; the packed params replace them.
    assert sum(isinstance(getattr(lowered, n, None), torch.ScriptObject) for n in dir(lowered)) == 2

    for inp in (x, x2):
        expected = _reference(converted, inp, dynamic)
        got = lowered(inp)
        assert torch.equal(got, expected)
        # and close to torch's float emulation of the same quantized graph (whose activations,
        # dynamic with reduce_range, have 7 bits where ours have 8)
        tolerance = 0.25 if kind == "x86_reduce_range" and dynamic else 0.05
        torch.testing.assert_close(got, converted(inp), atol=tolerance, rtol=0.05)


def test_lowered_graph_profiles_compiles_exports():
    model = Net().eval()
    x, x2 = _inputs()
    lowered = lower_pt2e(_converted(model, "x86", False, x), model)
    y = lowered(x)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        lowered(x)
    names = {e.key for e in prof.key_averages()}
    assert {"torch_sparse_backend::qlinear_relu_uint8", "torch_sparse_backend::qlinear_uint8"} <= names, names

    torch._dynamo.reset()
    compiled = torch.compile(lowered, fullgraph=True)
    assert torch.equal(compiled(x), y)
    assert torch.equal(compiled(x2), lowered(x2))

    program = torch.export.export(lowered, (x,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert torch.equal(loaded.module()(x), y)
    assert _our_ops(loaded.graph_module) == _our_ops(lowered)


def test_lower_pt2e_detects_block_shape():
    # Without the float model: every quantized linear is tried with block_shape; l2,
    # pruned in 8x1 blocks, has most of its 1x4 blocks nonzero and stays dense, as does l3.
    model = Net().eval()
    x, _ = _inputs()
    converted = _converted(model, "x86", True, x)
    lowered = lower_pt2e(copy.deepcopy(converted), block_shape=(1, 4), max_density=0.5)
    info = {i.name: i for i in lowered.tsb_lowered}
    assert info["l1"].op == "qlinear_relu_dynamic" and info["l1"].block_shape == (1, 4)
    assert info["l2"].op is None and info["l2"].density > 0.5
    assert info["l3"].op is None and info["l3"].density == 1.0
    assert len(_linears(lowered)) == 2
    l1 = _layer(converted, _linears(converted)[0])
    assert torch.equal(lowered(x), _run_with(converted, x, {l1["out"].name: _dynamic_reference(l1, (1, 4), x)}))


def _snapshot(gm):
    return gm.code, sorted(gm.state_dict()), [n.format_node() for n in gm.graph.nodes]


def test_lower_pt2e_errors_leave_graph_unchanged():
    model = Net().eval()
    x, _ = _inputs()

    # A float graph (not converted): nothing to lower.
    float_graph = torch.export.export(model, (x,)).module()
    before = _snapshot(float_graph)
    with pytest.raises(LoweringError, match="no quantized linear found.*convert_pt2e"):
        lower_pt2e(float_graph, model)
    assert _snapshot(float_graph) == before

    # A weight with a nonzero zero point: our ops need symmetric weights.
    converted = _converted(model, "x86", False, x)
    zp = next(n for n in converted.graph.nodes if n.op == "get_attr" and n.target.startswith("_zero_point"))
    getattr(converted, zp.target).fill_(3)
    before = _snapshot(converted)
    with pytest.raises(LoweringError, match="l1: the weight must be quantized symmetrically"):
        lower_pt2e(converted, model)
    assert _snapshot(converted) == before
    assert not hasattr(converted, "tsb_lowered")

    sparse_only = torch.nn.Sequential(model.l1).eval()
    lowered = lower_pt2e(_converted(sparse_only, "x86", True, x), sparse_only)
    before = _snapshot(lowered)
    with pytest.raises(LoweringError, match="lowered already"):
        lower_pt2e(lowered, sparse_only)
    assert _snapshot(lowered) == before

    with pytest.raises(TypeError, match="GraphModule"):
        lower_pt2e(model, model)
    with pytest.raises(ValueError, match="needs the block shapes"):
        lower_pt2e(converted)
    with pytest.raises(ValueError, match="block_shape must be a pair"):
        lower_pt2e(converted, block_shape=4)


def _pruned_sequential(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 80),
                                torch.nn.ReLU(), torch.nn.Linear(80, 32)).eval()
    _prune(model[0], (1, 4), 0.3, g)
    _prune(model[2], (8, 1), 0.3, g)
    return model


def test_quantize_config_equals_torch_ao_path():
    model = _pruned_sequential()
    reference = tq.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: tq.per_channel_dynamic_qconfig},
                                    mapping=tsb.get_default_dynamic_sparse_quant_module_mappings())
    dense = copy.deepcopy(model[4])
    quantize_(model, SparseInt8DynamicActivationInt8WeightConfig())

    assert type(model[0]) is tsb.nn.dynamic.Linear and model[0].sparse_block_shape == (1, 4)
    assert type(model[2]) is tsb.nn.dynamic.Linear and model[2].sparse_block_shape == (8, 1)
    assert type(model[4]) is torch.nn.Linear and torch.equal(model[4].weight, dense.weight)  # untouched
    x, x2 = _inputs()
    for i in (0, 2):
        for a, b in zip(model[i].int8_weight_bias(), reference[i].int8_weight_bias()):
            assert torch.equal(a, b)
    h = x
    for i in range(4):
        assert torch.equal(model[i](h), reference[i](h)), i
        h = model[i](h)
    assert torch.equal(model[4](h), dense(h))

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    assert torch.equal(compiled(x), model(x))
    assert torch.equal(compiled(x2), model(x2))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    assert "torch_sparse_backend::qlinear_dynamic" in {e.key for e in prof.key_averages()}


def test_quantize_config_dense_fallback_and_filter():
    model = _pruned_sequential()
    torchao_only = copy.deepcopy(model[4])
    quantize_(torchao_only, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    config = SparseInt8DynamicActivationInt8WeightConfig(
        max_density=0.5, dense_config=Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "2")

    assert type(model[0]) is tsb.nn.dynamic.Linear
    assert type(model[2]) is torch.nn.Linear and "sparse_params" in vars(model[2])  # filtered out
    assert type(model[4]) is torch.nn.Linear and type(model[4].weight) is type(torchao_only.weight)
    assert type(model[4].weight) is not torch.nn.Parameter
    h = torch.randn(5, 80)
    assert torch.equal(model[4](h), torchao_only(h))

    # A pruned layer denser than max_density goes to the dense config too.
    too_dense = _pruned_sequential()
    quantize_(too_dense, SparseInt8DynamicActivationInt8WeightConfig(max_density=0.1))
    assert all(type(m) is torch.nn.Linear for m in too_dense[::2])

    with pytest.raises(ValueError, match="block_shape must be a pair"):
        SparseInt8DynamicActivationInt8WeightConfig(block_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="max_density"):
        SparseInt8DynamicActivationInt8WeightConfig(max_density=2.0)
    with pytest.raises(TypeError, match="dense_config must be a torchao config"):
        SparseInt8DynamicActivationInt8WeightConfig(dense_config="int8")


def test_config_without_torchao_says_how_to_install(monkeypatch):
    import sys

    import torch_sparse_backend.torchao as tsb_torchao

    monkeypatch.setattr(tsb_torchao, "_config_class", None)
    for name in [n for n in sys.modules if n == "torchao" or n.startswith("torchao.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"needs torchao .*pip install torchao==0\.18\.0"):
        tsb_torchao.SparseInt8DynamicActivationInt8WeightConfig
    # lower_pt2e reads the graph only: it still runs.
    with pytest.raises(LoweringError, match="no quantized linear"):
        lower_pt2e(torch.fx.symbolic_trace(torch.nn.Linear(4, 4)), block_shape=(1, 4))


def test_demo_torchao_flow_compares_like_for_like(monkeypatch):
    from torch_sparse_backend import demo_torchao

    # The report is under test here; compiling (most of the demo's time) is tested above.
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)
    lines = []
    result = demo_torchao.run(rounds=1, batch=4, out=lines.append)
    text = "\n".join(lines)
    assert result["exported_identical"] is True and result["compiled_identical"] is True
    rows = {(r["flow"], r["mode"], r["form"]): r for r in result["models"]}
    assert set(rows) == {("quantize_", "dynamic", "module"), ("quantize_", "dynamic", "torch.compile"),
                         ("PT2E", "static", "torch.compile"), ("PT2E", "dynamic", "torch.compile")}
    expected_sparse = {"quantize_": 3, "PT2E": 3}
    for (flow, mode, form), r in rows.items():
        sparse = 2 if (flow, mode) == ("PT2E", "static") else expected_sparse[flow]   # fc3's output is float
        assert r["sparse_layers"] == sparse
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["ours_ms"])
        assert f"| {flow} | {mode} | {form} | {r['dense_ms']:.3f} | {r['ours_ms']:.3f} | {sparse} of 3 " \
               f"| {r['speedup']:.2f}x |" in text
    assert "static  fc3: stays dense: its output is not quantized, or not only" in text

"""torch.ao flows end to end: sparsifier, eager convert, FX prepare_fx / convert_fx, dense fallback.

The converted models hold torch's dense modules too (dense fallback, layers
without sparse_params): they are built with the qconfig of, and converted and
run under, ``reference_engine(...)``, which is the x86 engines on x86 and
qnnpack where torch's dense x86 / fbgemm kernels do not run (aarch64).
"""

import copy
import io
import logging

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.quantization as tq
from torch.ao.pruning import WeightNormSparsifier
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.testing._internal.common_quantized import override_quantized_engine

import torch_sparse_backend as tsb
from _reference import ExactQLinear, reference_engine, reference_qlinear_dynamic


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 96)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(96, 48)
        self.fc3 = torch.nn.Linear(48, 16)

    def forward(self, x):
        return self.fc3(self.fc2(self.relu(self.fc1(x))))


def _sparsified(block=(1, 4)):
    """fc1 pruned to 80% and fc2 to 30% with torch.ao.pruning; fc3 untouched."""
    torch.manual_seed(0)
    model = Net().eval()
    sparsifier = WeightNormSparsifier(sparsity_level=0.8, sparse_block_shape=block)
    sparsifier.prepare(model, [{"tensor_fqn": "fc1.weight"}, {"tensor_fqn": "fc2.weight", "sparsity_level": 0.3}])
    sparsifier.step()
    sparsifier.squash_mask(params_to_keep=("sparse_block_shape",))
    return model


def _qconfig_mapping(mode):
    if mode == "static":
        return tq.get_default_qconfig_mapping(reference_engine("x86"))
    return tq.QConfigMapping().set_global(tq.default_dynamic_qconfig)


def _prepare(model, mode, fuse, x):
    qmapping = _qconfig_mapping(mode)
    backend = tsb.get_sparse_backend_config()
    if not fuse:
        model = copy.deepcopy(model)
        model.relu = torch.nn.Hardtanh(0.0, 1e9)  # not fusable with linear
    prepared = prepare_fx(model, qmapping, (x,), backend_config=backend)
    prepared(torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))
    return prepared


def test_sparsifier_leaves_block_shape():
    model = _sparsified((8, 1))
    assert model.fc1.sparse_params == {"sparse_block_shape": (8, 1)}
    assert not hasattr(model.fc3, "sparse_params")
    assert tsb.block_density(model.fc1.weight, (8, 1)) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("block", [(1, 4), (8, 1)])
@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_fx_convert(mode, fuse, block):
    model = _sparsified(block)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    prepared = _prepare(model, mode, fuse, x)
    with override_quantized_engine(reference_engine()):
        _check_fx_convert(mode, fuse, block, prepared, x)


def _check_fx_convert(mode, fuse, block, prepared, x):
    dense = convert_fx(copy.deepcopy(prepared), backend_config=tsb.get_sparse_backend_config())
    ours = tsb.convert_fx(prepared)

    expected_fc1 = {
        ("static", True): tsb.nn.LinearReLU, ("static", False): tsb.nn.Linear,
        ("dynamic", True): tsb.nn.dynamic.LinearReLU, ("dynamic", False): tsb.nn.dynamic.Linear,
    }[(mode, fuse)]
    assert type(ours.fc1) is expected_fc1
    assert ours.fc1.sparse_block_shape == block
    # fc2 (70% dense) falls back to dense, fc3 has no sparse_params.
    dense_types = (nnq.Linear, nniq.LinearReLU) if mode == "static" else (nnqd.Linear, nniqd.LinearReLU)
    assert isinstance(ours.fc2, dense_types) and isinstance(ours.fc3, dense_types)
    assert torch.equal(ours.fc1.weight().int_repr(), dense.fc1.weight().int_repr())

    if mode == "static":
        compare_engine = reference_engine("fbgemm")
        with override_quantized_engine(compare_engine):
            if compare_engine == "fbgemm":
                # Activations observed with reduce_range stay below 128: dense fbgemm is exact.
                assert torch.equal(ours(x), dense(x))
            else:
                # Dense fbgemm semantics without fbgemm: the dense model with fc1
                # computed by the exact reference equals ours bit for bit, and
                # that fc1 is within 1 unit of the dense one.
                exact = copy.deepcopy(dense)
                exact.fc1 = ExactQLinear(dense.fc1, relu=fuse)
                assert torch.equal(ours(x), exact(x))
                assert exact.fc1.max_diff_to_dense <= 1
    else:
        w, b = ours.fc1.weight(), ours.fc1.bias()
        got = ours.fc1(x)
        want = reference_qlinear_dynamic(x, w, b, relu=fuse)
        assert torch.equal(got, want)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(ours), buf)
    buf.seek(0)
    assert torch.equal(torch.jit.load(buf)(x), ours(x))


def test_fx_max_density_override_and_log(caplog):
    model = _sparsified()
    x = torch.randn(4, 64)
    prepared = _prepare(model, "dynamic", True, x)
    with caplog.at_level(logging.INFO, logger="torch_sparse_backend"), override_quantized_engine(reference_engine()):
        ours = tsb.convert_fx(copy.deepcopy(prepared), max_density=0.1)
    assert isinstance(ours.fc1, nniqd.LinearReLU)  # 20% dense > 10%: dense fallback
    assert any("fc1: 20.0% of its 1x4 blocks are nonzero" in r.getMessage() for r in caplog.records)
    with override_quantized_engine(reference_engine()):
        ours = tsb.convert_fx(prepared, max_density=0.75)
    assert type(ours.fc2) is tsb.nn.dynamic.Linear  # 70% dense <= 75%


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_eager_pipeline_and_summary(mode, capsys):
    with override_quantized_engine(reference_engine()):
        _check_eager_pipeline_and_summary(mode, capsys)


def _check_eager_pipeline_and_summary(mode, capsys):
    model = _sparsified()
    x = torch.randn(8, 64)
    if mode == "static":
        wrapped = torch.nn.Sequential(tq.QuantStub(), model, tq.DeQuantStub()).eval()
        wrapped.qconfig = tq.get_default_qconfig(reference_engine("x86"))
        tq.prepare(wrapped, inplace=True)
        wrapped(torch.randn(64, 64))
        converted = tq.convert(wrapped, mapping=tsb.get_default_static_sparse_quant_module_mappings())
        net = converted[1]
        assert type(net.fc1) is tsb.nn.Linear
    else:
        converted = tq.quantize_dynamic(
            model, {torch.nn.Linear}, mapping=tsb.get_default_dynamic_sparse_quant_module_mappings()
        )
        net = converted
        assert type(net.fc1) is tsb.nn.dynamic.Linear
    assert not isinstance(net.fc2, tsb.nn.dynamic.Linear) and not isinstance(net.fc2, tsb.nn.Linear)
    converted(x)
    rows = tsb.summary(converted)
    by_name = {r["name"].split(".")[-1]: r for r in rows}
    assert by_name["fc1"]["kernel"].startswith("sparse")
    assert by_name["fc1"]["block_shape"] == (1, 4)
    assert by_name["fc1"]["density"] == pytest.approx(0.2, abs=0.01)
    assert by_name["fc1"]["weight_bytes"] < by_name["fc1"]["dense_bytes"]
    assert by_name["fc2"]["kernel"] == "dense int8 (torch)"
    out = capsys.readouterr().out
    assert "| layer | kernel | block | density |" in out and "sparse (" in out


def test_eager_mapping_max_density_override():
    model = _sparsified()
    with override_quantized_engine(reference_engine()):  # fc3 becomes torch's dense module
        converted = tq.quantize_dynamic(
            model, {torch.nn.Linear}, mapping=tsb.get_default_dynamic_sparse_quant_module_mappings(max_density=0.8)
        )
    assert type(converted.fc1) is tsb.nn.dynamic.Linear
    assert type(converted.fc2) is tsb.nn.dynamic.Linear
    with pytest.raises(ValueError, match="max_density must be in"):
        tq.quantize_dynamic(
            _sparsified(), {torch.nn.Linear},
            mapping=tsb.get_default_dynamic_sparse_quant_module_mappings(max_density=1.5),
        )


def test_fx_result_scripts_with_annotated_forward():
    # demo.MLP annotates forward under `from __future__ import annotations`, which
    # torch's own convert_fx output cannot script; ours can.
    from torch_sparse_backend.demo import FEATURES, MLP, _sparsify

    model = MLP().eval()
    _sparsify(model, 0.8, (1, 4))
    x = torch.randn(4, FEATURES)
    prepared = prepare_fx(model, tq.get_default_qconfig_mapping(reference_engine("x86")), (x,),
                          backend_config=tsb.get_sparse_backend_config())
    prepared(x)
    with override_quantized_engine(reference_engine()):  # the MLP's other layers stay dense
        converted = tsb.convert_fx(prepared)
        assert type(converted.fc2) is tsb.nn.LinearReLU  # fc2 + relu2 fused by prepare_fx
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(converted), buf)
        buf.seek(0)
        assert torch.equal(torch.jit.load(buf)(x), converted(x))

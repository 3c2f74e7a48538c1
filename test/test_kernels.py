"""Upstream-style suite, shaped like torch's test/ao/sparsity/test_kernels.py.

Unlike torch's, nothing is skipped: every engine in
``torch.backends.quantized.supported_engines`` x static/dynamic x relu or not x
per-tensor/per-channel x every listed block shape, checked against torch's dense
quantized ops and against an exact integer reference. Our ops run under each
engine; torch's dense reference runs under ``reference_engine(engine)``: the
engine itself where torch's dense int8 works, else qnnpack (on aarch64, where
torch lists x86 and fbgemm but their dense kernels are x86 only, and, under
qemu -cpu max, for onednn, whose dense dynamic op dies of SIGILL there).
"""

import copy
import io
import itertools
import warnings

import torch
import torch.ao.quantization as tq
from torch.testing._internal.common_quantized import override_quantized_engine
from torch.testing._internal.common_utils import TestCase, run_tests

import torch_sparse_backend as tsb
from _reference import (
    check_activation_rounding,
    dense_dynamic_expectation,
    make_sparse_qweight,
    reference_engine,
    reference_qlinear,
    reference_qlinear_dynamic,
)

warnings.filterwarnings("ignore", message=".*quantize.*deprecated.*")

OPS = torch.ops.torch_sparse_backend
ENGINES = list(torch.backends.quantized.supported_engines)
ENGINES = [e for e in ENGINES if e != "none"]
BLOCK_SHAPES = [(1, 4), (8, 1), (4, 4), (1, 8), (16, 1), (1, 1), (2, 2), (4, 16), (16, 2)]


def _dense_static(x_q, w_q, bias, y_scale, y_zp, relu):
    packed = torch.ops.quantized.linear_prepack(w_q, bias)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    return op(x_q, packed, y_scale, y_zp)


def _dense_dynamic(x, w_q, bias, relu):
    packed = torch.ops.quantized.linear_prepack(w_q, bias)
    op = torch.ops.quantized.linear_relu_dynamic if relu else torch.ops.quantized.linear_dynamic
    return op(x, packed, False)


class TestQuantizedSparseKernels(TestCase):
    def test_engines_cover_the_x86_defaults(self):
        # The suite must exercise at least the engines torch ships on this platform.
        self.assertIn("qnnpack", ENGINES)
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            for engine in ("fbgemm", "x86", "onednn"):
                self.assertIn(engine, ENGINES)

    def test_sparse_qlinear(self):
        g = torch.Generator().manual_seed(0)
        batch, out_features, in_features = 7, 37, 70
        for block, per_channel, relu in itertools.product(BLOCK_SHAPES, (False, True), (False, True)):
            # |w| <= 64 keeps fbgemm's own int16 intermediates from saturating,
            # so the dense op is an exact reference.
            w_q = make_sparse_qweight(out_features, in_features, block, 0.4, per_channel, g, wmax=64)
            bias = torch.randn(out_features, generator=g) * 3
            x = torch.randn(batch, in_features, generator=g) * 2
            x_q = torch.quantize_per_tensor(x, 0.025, 131, torch.quint8)
            y_scale, y_zp = 0.35, 97
            expected_static = reference_qlinear(x_q, w_q, bias, y_scale, y_zp, relu)
            expected_dynamic = reference_qlinear_dynamic(x, w_q, bias, relu)
            results = {}
            for engine in ENGINES:
                with override_quantized_engine(engine), self.subTest(
                    engine=engine, block=block, per_channel=per_channel, relu=relu
                ):
                    packed = OPS.qlinear_prepack(w_q, bias, *block)
                    op = OPS.qlinear_relu if relu else OPS.qlinear
                    y = op(x_q, packed, y_scale, y_zp)
                    self.assertEqual(y.dtype, torch.quint8)
                    self.assertEqual((y.q_scale(), y.q_zero_point()), (y_scale, y_zp))
                    self.assertEqual(y.int_repr(), expected_static, atol=0, rtol=0)

                    dense_engine = reference_engine(engine)
                    with override_quantized_engine(dense_engine):
                        dense = _dense_static(x_q, w_q, bias, y_scale, y_zp, relu).int_repr()
                    if dense_engine == "fbgemm":
                        self.assertEqual(y.int_repr(), dense, atol=0, rtol=0)
                    else:
                        diff = (y.int_repr().int() - dense.int()).abs().max().item()
                        self.assertLessEqual(diff, 1, f"dense {dense_engine} differs by {diff}")

                    opd = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
                    yd = opd(x, packed)
                    self.assertEqual(yd.dtype, torch.float32)
                    self.assertEqual(yd, expected_dynamic, atol=0, rtol=0)
                    with override_quantized_engine(dense_engine):
                        dense_d = _dense_dynamic(x, w_q, bias, relu)
                    # torch's dense op: the same exact product, on torch's own
                    # activation rounding (equal to ours but at float32 ties).
                    tol = 1e-4 * dense_d.abs().max().item()
                    self.assertEqual(dense_d, dense_dynamic_expectation(x, w_q, bias, relu), atol=tol, rtol=0)
                    if check_activation_rounding(x) == 0:
                        self.assertEqual(yd, dense_d, atol=tol, rtol=0)
                    results[engine] = (y.int_repr(), yd)
            # Identical under every engine (subtests that failed above are left out).
            if results:
                first = next(iter(results.values()))
                for engine, (ys, yd) in results.items():
                    self.assertTrue(torch.equal(ys, first[0]) and torch.equal(yd, first[1]), engine)

    def test_sparse_qlinear_full_range_is_exact(self):
        # Full-range activations with weights at +-127 and -128: where fbgemm's
        # dense op saturates, ours stays exact (checked against the integer
        # reference) and qnnpack's dense op (exact int32) stays within 1 unit.
        g = torch.Generator().manual_seed(1)
        for block in BLOCK_SHAPES:
            w_q = make_sparse_qweight(24, 96, block, 0.6, True, g, wmax=127, wmin=-128)
            wi = w_q.int_repr()
            wi[wi > 0] = 127
            wi[wi < 0] = -128
            w_q = torch._make_per_channel_quantized_tensor(
                wi, w_q.q_per_channel_scales(), w_q.q_per_channel_zero_points(), 0
            )
            x_int = torch.randint(0, 2, (5, 96), dtype=torch.uint8, generator=g) * 255
            x_q = torch._make_per_tensor_quantized_tensor(x_int, 0.02, 0)
            packed = OPS.qlinear_prepack(w_q, None, *block)
            y = OPS.qlinear(x_q, packed, 40.0, 128)
            self.assertEqual(y.int_repr(), reference_qlinear(x_q, w_q, None, 40.0, 128, False), atol=0, rtol=0)
            with override_quantized_engine("qnnpack"):
                dense = _dense_static(x_q, w_q, None, 40.0, 128, False).int_repr()
            self.assertLessEqual((y.int_repr().int() - dense.int()).abs().max().item(), 1)
            x = torch.randn(5, 96, generator=g) * 10
            with override_quantized_engine("qnnpack"):
                dense_d = _dense_dynamic(x, w_q, None, False)
            yd = OPS.qlinear_dynamic(x, packed)
            self.assertEqual(yd, reference_qlinear_dynamic(x, w_q, None, False), atol=0, rtol=0)
            expected_dense = dense_dynamic_expectation(x, w_q, None, False)
            self.assertEqual(dense_d, expected_dense, atol=1e-4 * dense_d.abs().max().item(), rtol=0)

    def test_sparse_qlinear_input_shapes(self):
        g = torch.Generator().manual_seed(2)
        w_q = make_sparse_qweight(19, 30, (1, 4), 0.5, False, g)
        bias = torch.randn(19, generator=g)
        packed = OPS.qlinear_prepack(w_q, bias, 1, 4)
        for shape in [(30,), (3, 30), (2, 3, 30), (2, 1, 2, 30), (0, 30), (4, 0, 30)]:
            with self.subTest(shape=shape):
                x = torch.randn(*shape, generator=g)
                x_q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
                y = OPS.qlinear(x_q, packed, 0.1, 128)
                self.assertEqual(tuple(y.shape), shape[:-1] + (19,))
                self.assertEqual(y.int_repr(), reference_qlinear(x_q, w_q, bias, 0.1, 128, False), atol=0, rtol=0)
                yd = OPS.qlinear_dynamic(x, packed)
                self.assertEqual(tuple(yd.shape), shape[:-1] + (19,))
                if x.numel():
                    self.assertEqual(yd, reference_qlinear_dynamic(x, w_q, bias, False), atol=0, rtol=0)
        # Non-contiguous input gives the same result as its contiguous copy.
        x = torch.randn(30, 6, generator=g).t()
        x_q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        self.assertFalse(x.is_contiguous())
        self.assertEqual(OPS.qlinear_dynamic(x, packed), OPS.qlinear_dynamic(x.contiguous(), packed), atol=0, rtol=0)
        self.assertEqual(
            OPS.qlinear(x_q, packed, 0.1, 100).int_repr(),
            OPS.qlinear(x_q.contiguous(), packed, 0.1, 100).int_repr(),
            atol=0,
            rtol=0,
        )

    def test_sparse_qlinear_serdes(self):
        g = torch.Generator().manual_seed(3)
        for block, per_channel, has_bias in itertools.product(
            BLOCK_SHAPES + [(2, 16), (16, 16)], (False, True), (False, True)
        ):
            with self.subTest(block=block, per_channel=per_channel, bias=has_bias):
                w_q = make_sparse_qweight(29, 45, block, 0.3, per_channel, g)
                bias = torch.randn(29, generator=g) if has_bias else None
                packed = OPS.qlinear_prepack(w_q, bias, *block)
                w2, b2, pattern = OPS.qlinear_unpack(packed)
                self.assertEqual(list(pattern), list(block))
                self.assertEqual(w2.qscheme(), w_q.qscheme())
                self.assertTrue(torch.equal(w2.int_repr(), w_q.int_repr()))
                if per_channel:
                    self.assertTrue(torch.equal(w2.q_per_channel_scales(), w_q.q_per_channel_scales()))
                    self.assertTrue(torch.equal(w2.q_per_channel_zero_points(), w_q.q_per_channel_zero_points()))
                    self.assertEqual(w2.q_per_channel_axis(), 0)
                else:
                    self.assertEqual((w2.q_scale(), w2.q_zero_point()), (w_q.q_scale(), 0))
                if has_bias:
                    self.assertTrue(torch.equal(b2, bias))
                else:
                    self.assertIsNone(b2)
                # Pickled through torch.save and TorchScript's pickler, the weight is identical.
                buf = io.BytesIO()
                torch.save(packed, buf)
                buf.seek(0)
                loaded = torch.load(buf, weights_only=False)
                w3, b3, pattern3 = OPS.qlinear_unpack(loaded)
                self.assertTrue(torch.equal(w3.int_repr(), w_q.int_repr()))
                self.assertEqual(list(pattern3), list(block))
                x = torch.randn(3, 45, generator=g)
                self.assertEqual(OPS.qlinear_dynamic(x, loaded), OPS.qlinear_dynamic(x, packed), atol=0, rtol=0)


class SparseQuantizedModel(torch.nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.linear = torch.nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.linear(x)


class TestQuantizedSparseLayers(TestCase):
    def _sparse_layer_test_helper(
        self, model_class, sparse_mapping, ref_mapping, qconfig_dict, fqn_to_check, test_class, test_scripting
    ):
        batch, input_channels, output_channels = 12, 4, 4
        for engine, block in itertools.product(ENGINES, [(1, 4), (8, 1), (4, 4), (1, 1)]):
            with override_quantized_engine(engine), self.subTest(engine=engine, block=block):
                model = model_class(input_channels, output_channels)
                model.eval()
                # Prune every other block like torch.ao.pruning would.
                with torch.no_grad():
                    mask = torch.ones_like(model.linear.weight)
                    mask[::2, ::2] = 0
                    model.linear.weight.mul_(mask)
                model.linear.sparse_params = {"sparse_block_shape": block}
                x = torch.randn(batch, input_channels)

                # torch's dense model (the reference) is converted and run under
                # the reference engine, ours under `engine`.
                dense_engine = reference_engine(engine)
                dense_model = copy.deepcopy(model)
                sparse_model = copy.deepcopy(model)
                tq.propagate_qconfig_(dense_model, qconfig_dict)
                tq.propagate_qconfig_(sparse_model, qconfig_dict)
                tq.prepare(dense_model, inplace=True)
                tq.prepare(sparse_model, inplace=True)
                dense_model(x)
                sparse_model(x)
                with override_quantized_engine(dense_engine):
                    tq.convert(dense_model, mapping=ref_mapping, inplace=True)
                tq.convert(sparse_model, mapping=sparse_mapping, inplace=True)

                dense_module = getattr(dense_model, fqn_to_check)
                sparse_module = getattr(sparse_model, fqn_to_check)
                self.assertIsInstance(sparse_module, test_class)
                self.assertEqual(sparse_module.sparse_block_shape, block)
                self.assertEqual(sparse_module.weight().int_repr(), dense_module.weight().int_repr(), atol=0, rtol=0)

                xin = x
                if test_class.__module__.endswith("nn.linear"):  # static: quantized input
                    # Values within [0, 127], as after the reduce_range observers of
                    # torch's qconfigs: the dense fbgemm and onednn ops saturate their
                    # int16 intermediates beyond that, ours never does.
                    xin = torch.quantize_per_tensor(x, 0.04, 64, torch.quint8)
                with override_quantized_engine(dense_engine):
                    dense_out = dense_model(xin)
                sparse_out = sparse_model(xin)
                if xin.is_quantized:
                    diff = (dense_out.int_repr().int() - sparse_out.int_repr().int()).abs().max().item()
                    self.assertLessEqual(diff, 0 if dense_engine == "fbgemm" else 1)
                else:
                    # torch's dense dynamic modules use reduce_range on fbgemm/x86;
                    # the contract's references are the exact integer product and
                    # the dense op with reduce_range=False on qnnpack.
                    w, b = dense_module.weight(), dense_module.bias()
                    self.assertEqual(sparse_out, reference_qlinear_dynamic(x, w, b, False), atol=0, rtol=0)
                    with override_quantized_engine("qnnpack"):
                        dense_exact = _dense_dynamic(x, w, b, False)
                    expected_dense = dense_dynamic_expectation(x, w, b, False)
                    self.assertEqual(dense_exact, expected_dense, atol=1e-4 * dense_exact.abs().max().item(), rtol=0)
                    self.assertEqual(sparse_out, dense_out, atol=0.05 * dense_out.abs().max().item(), rtol=0)

                if test_scripting:
                    scripted = torch.jit.script(sparse_model)
                    buf = io.BytesIO()
                    torch.jit.save(scripted, buf)
                    buf.seek(0)
                    loaded = torch.jit.load(buf)
                    out = loaded(xin)
                    if xin.is_quantized:
                        self.assertTrue(torch.equal(out.int_repr(), sparse_out.int_repr()))
                    else:
                        self.assertTrue(torch.equal(out, sparse_out))

    def test_static_sparse_linear(self):
        self._sparse_layer_test_helper(
            model_class=SparseQuantizedModel,
            # max_density=1: this 4x4 layer is too dense to pay, convert it anyway.
            sparse_mapping=tsb.get_default_static_sparse_quant_module_mappings(max_density=1.0),
            ref_mapping=tq.get_default_static_quant_module_mappings(),
            qconfig_dict={torch.nn.Linear: tq.get_default_qconfig("fbgemm")},
            fqn_to_check="linear",
            test_class=tsb.nn.Linear,
            test_scripting=True,
        )

    def test_dynamic_sparse_linear(self):
        self._sparse_layer_test_helper(
            model_class=SparseQuantizedModel,
            sparse_mapping=tsb.get_default_dynamic_sparse_quant_module_mappings(max_density=1.0),
            ref_mapping=tq.get_default_dynamic_quant_module_mappings(),
            qconfig_dict={torch.nn.Linear: tq.qconfig.default_dynamic_qconfig},
            fqn_to_check="linear",
            test_class=tsb.nn.dynamic.Linear,
            test_scripting=True,
        )


if __name__ == "__main__":
    run_tests()

"""``python -m torch_sparse_backend demo``: prune, quantize, script and time a small model.

Everything is made in code (no downloads): a 3-layer MLP with random weights is
pruned to 80% block sparsity (1x4) with torch.ao.pruning, quantized static and
dynamic through the standard torch.ao flows with this package's hooks (eager
``convert`` with our mappings, FX ``prepare_fx`` with our BackendConfig and
``torch_sparse_backend.convert_fx``), round-tripped through TorchScript, and
compared with torch's dense int8, fp32 and torch's own sparse modules.
"""

from __future__ import annotations

import copy
import io
import platform
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.ao.quantization as tq
from torch.ao.pruning import WeightNormSparsifier
from torch.ao.quantization.quantize_fx import prepare_fx

import torch_sparse_backend as tsb

__all__ = ["main"]

HIDDEN = 768
FEATURES = 256
CLASSES = 64
BATCH = 16


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc1 = torch.nn.Linear(FEATURES, HIDDEN)
        self.relu1 = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(HIDDEN, HIDDEN)
        self.relu2 = torch.nn.ReLU()
        self.fc3 = torch.nn.Linear(HIDDEN, CLASSES)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.dequant(self.fc3(x))


def _stage(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text}", flush=True)


def _median_ms(fn: Callable[[], object], repeat: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _sparsify(model: torch.nn.Module, level: float, block: tuple[int, int]) -> None:
    sparsifier = WeightNormSparsifier(sparsity_level=level, sparse_block_shape=block)
    config = [{"tensor_fqn": f"{name}.weight"} for name in ("fc1", "fc2", "fc3")]
    sparsifier.prepare(model, config)
    sparsifier.step()
    sparsifier.squash_mask(params_to_keep=("sparse_block_shape",))


def _quantize_static(model: torch.nn.Module, calib: torch.Tensor, mapping: dict | None) -> torch.nn.Module:
    m = copy.deepcopy(model).eval()
    m.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(m, inplace=True)
    m(calib)
    return tq.convert(m, mapping=mapping, inplace=False)


def _quantize_dynamic(model: torch.nn.Module, mapping: dict | None) -> torch.nn.Module:
    m = copy.deepcopy(model).eval()
    return tq.quantize_dynamic(m, {torch.nn.Linear: tq.default_dynamic_qconfig}, mapping=mapping)


def _quantize_fx(model: torch.nn.Module, calib: torch.Tensor, mode: str) -> torch.nn.Module:
    if mode == "static":
        qconfig_mapping = tq.get_default_qconfig_mapping("x86")
    else:
        qconfig_mapping = tq.QConfigMapping().set_global(tq.default_dynamic_qconfig)
    prepared = prepare_fx(copy.deepcopy(model).eval(), qconfig_mapping, (calib,),
                          backend_config=tsb.get_sparse_backend_config())
    prepared(calib)
    return tsb.convert_fx(prepared)


def _torch_sparse_static(model: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    mapping = dict(tq.get_default_static_quant_module_mappings())
    mapping.update(tq.get_default_static_sparse_quant_module_mappings())
    return _quantize_static(model, calib, mapping)


def _torch_sparse_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    return _quantize_dynamic(model, tq.get_default_dynamic_sparse_quant_module_mappings())


def _script_roundtrip(model: torch.nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def main(sparsity: float = 0.8, block: tuple[int, int] = (1, 4)) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.manual_seed(0)
    n = 7
    if platform.machine().lower() in ("aarch64", "arm64") and torch.backends.quantized.engine in ("x86", "fbgemm"):
        # torch's default engine on aarch64 is x86, whose dense int8 kernels (the
        # baseline here, and every layer that stays dense) run on x86 only.
        torch.backends.quantized.engine = "qnnpack"
    engine = torch.backends.quantized.engine
    _stage(1, n, f"float MLP {FEATURES}->{HIDDEN}->{HIDDEN}->{CLASSES}, batch {BATCH}, "
           f"kernel '{tsb.info()['active_kernel']}', quantized engine '{engine}'")
    model = MLP().eval()
    calib = torch.randn(256, FEATURES)
    x = torch.randn(BATCH, FEATURES)
    eval_x = torch.randn(1024, FEATURES)

    _stage(2, n, f"sparsify with WeightNormSparsifier: {block[0]}x{block[1]} blocks, {sparsity:.0%}")
    _sparsify(model, sparsity, block)
    with torch.no_grad():
        ref = model(eval_x)
    print(f"      fc2 block density after pruning: {tsb.block_density(model.fc2.weight, block):.3f}")

    _stage(3, n, "eager mode, static: prepare, calibrate, convert with our mappings")
    ours_static = _quantize_static(model, calib, tsb.get_default_static_sparse_quant_module_mappings())
    dense_static = _quantize_static(model, calib, None)
    print(f"      fc2 -> {ours_static.fc2}")

    _stage(4, n, "eager mode, dynamic: convert with our mappings")
    ours_dynamic = _quantize_dynamic(model, tsb.get_default_dynamic_sparse_quant_module_mappings())
    dense_dynamic = _quantize_dynamic(model, None)

    _stage(5, n, "FX graph mode: prepare_fx with our BackendConfig, calibrate, tsb.convert_fx")
    fx_static = _quantize_fx(model, calib, "static")
    fx_dynamic = _quantize_fx(model, calib, "dynamic")
    tsb.summary(fx_static)

    _stage(6, n, "TorchScript: script, save, load (eager and FX models)")
    same = True
    scripted = {}
    with torch.no_grad():
        for key, m in (("static", ours_static), ("dynamic", ours_dynamic),
                       ("fx static", fx_static), ("fx dynamic", fx_dynamic)):
            scripted[key] = _script_roundtrip(m)
            same &= torch.equal(scripted[key](eval_x), m(eval_x))
    print(f"      loaded models give identical outputs: {same}")

    _stage(7, n, "accuracy and latency (median of 30 runs, 1 thread)")
    rows = []
    torch_sparse = {}
    with torch.no_grad():
        prev_engine = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = "fbgemm"
            torch_sparse["static"] = _torch_sparse_static(model, calib)
        except (RuntimeError, AssertionError) as e:
            print(f"      torch's sparse static modules do not run here: {str(e).splitlines()[0]}")
        try:
            torch.backends.quantized.engine = "qnnpack"
            torch_sparse["dynamic"] = _torch_sparse_dynamic(model)
        except (RuntimeError, AssertionError) as e:
            print(f"      torch's sparse dynamic modules do not run here: {str(e).splitlines()[0]}")
        torch.backends.quantized.engine = prev_engine

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fp32_ms = _median_ms(lambda: model(x))
            rows.append(("fp32 (pruned weights)", "", _agreement(ref, ref), 0.0, fp32_ms))
            for mode, dense in (("static", dense_static), ("dynamic", dense_dynamic)):
                dense_out = dense(eval_x)
                dense_ms = _median_ms(lambda: dense(x))
                rows.append((f"torch dense int8 ({engine})", mode, _agreement(dense_out, ref), 0.0, dense_ms))
                if mode in torch_sparse:
                    ts_model = torch_sparse[mode]
                    ts_engine = "fbgemm" if mode == "static" else "qnnpack"
                    torch.backends.quantized.engine = ts_engine
                    try:
                        ts_out = ts_model(eval_x)
                        ts_ms = _median_ms(lambda: ts_model(x))
                        rows.append((f"torch sparse ({ts_engine})", mode, _agreement(ts_out, ref),
                                     float((ts_out - dense_out).abs().max()), ts_ms))
                    except RuntimeError as e:
                        print(f"      torch's sparse {mode} model fails: {str(e).splitlines()[0]}")
                    finally:
                        torch.backends.quantized.engine = prev_engine
                for label, ours in (("torch_sparse_backend (eager)", scripted[mode]),
                                    ("torch_sparse_backend (FX)", scripted[f"fx {mode}"])):
                    ours_out = ours(eval_x)
                    ours_ms = _median_ms(lambda: ours(x))
                    rows.append((label, mode, _agreement(ours_out, ref),
                                 float((ours_out - dense_out).abs().max()), ours_ms))
        finally:
            torch.set_num_threads(threads)

    dense_ms = {r[1]: r[4] for r in rows if r[0].startswith("torch dense")}
    print()
    print("| model | mode | top-1 agreement with fp32 | max abs diff vs dense int8 | latency ms | speedup vs dense int8 |")
    print("|---|---|---|---|---|---|")
    for name, mode, agree, diff, ms in rows:
        speedup = f"{dense_ms[mode] / ms:.2f}x" if mode in dense_ms else ""
        diff_s = f"{diff:.4f}" if name not in ("fp32 (pruned weights)",) and not name.startswith("torch dense") else ""
        print(f"| {name} | {mode} | {agree:.3f} | {diff_s} | {ms:.3f} | {speedup} |")
    print()
    print("demo finished" if same else "demo FAILED: TorchScript round trip changed the outputs")
    return 0 if same else 1

"""``python -m torch_sparse_backend demo --flow torchao``: the demo's model through torchao.

The same pruned 3-layer MLP as :mod:`torch_sparse_backend.demo` goes through the
two torchao flows, each converted twice from one model, once with torchao's
dense int8 and once with this package's hooks, so each pair shares every
quantization parameter of the layers that stay dense:

- ``quantize_``: torchao's ``Int8DynamicActivationInt8WeightConfig`` against
  :class:`~torch_sparse_backend.torchao.SparseInt8DynamicActivationInt8WeightConfig`
  (whose dense fallback is that same torchao config);
- PT2E: ``torch.export`` + ``prepare_pt2e`` / ``convert_pt2e`` with the inductor
  quantizer of the machine (X86InductorQuantizer, ArmInductorQuantizer on aarch64),
  static and dynamic; the dense model is the converted graph, ours the same graph
  after :func:`~torch_sparse_backend.torchao.lower_pt2e`.

Pairs are timed like for like, in turns on the same inputs: eager module against
eager module and ``torch.compile`` against ``torch.compile`` (for PT2E graphs,
inductor with freezing, which is how torchao runs them: it turns the dense
quantize / dequantize / linear patterns into oneDNN int8 linears). The converted
PT2E graph run eagerly is torch's float emulation of int8, not an int8 kernel, so
it is not a contender.
"""

from __future__ import annotations

import copy
import io
import platform
import warnings
from typing import Callable

import torch

import torch_sparse_backend as tsb

from .demo import CLASSES, FEATURES, HIDDEN, LAYERS, MLP, Contender, _agreement, _sparsify, time_in_turns

__all__ = ["run"]


def _torchao():
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import arm_inductor_quantizer, x86_inductor_quantizer
    except ImportError as e:
        raise SystemExit(f"--flow torchao needs torchao: pip install torchao==0.18.0 ({e})") from None
    return Int8DynamicActivationInt8WeightConfig, quantize_, prepare_pt2e, convert_pt2e, \
        arm_inductor_quantizer, x86_inductor_quantizer


def _quantizer(aq, xq, dynamic: bool):
    if platform.machine().lower() in ("aarch64", "arm64"):
        q = aq.ArmInductorQuantizer()
        q.set_global(aq.get_default_arm_inductor_quantization_config(is_dynamic=dynamic))
        return q, "ArmInductorQuantizer"
    q = xq.X86InductorQuantizer()
    q.set_global(xq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
    return q, "X86InductorQuantizer"


def _roundtrip(gm: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(gm, (x,)), buf)
    buf.seek(0)
    return torch.export.load(buf).module()


def run(sparsity: float = 0.8, block: tuple[int, int] = (1, 4), batch: int = 16, rounds: int = 31,
        threads: int = 1, max_density: float = tsb.DEFAULT_MAX_DENSITY, seed: int = 0,
        out: Callable[[str], None] = print) -> dict[str, object]:
    """Runs the torchao demo, prints its report through ``out`` and returns the measurements:
    ``models`` (per flow, mode and form: times, layers sparse, speedup) and the checks
    ``exported_identical`` and ``compiled_identical``."""
    from .demo import check_arguments
    from .torchao import SparseInt8DynamicActivationInt8WeightConfig, lower_pt2e

    check_arguments(sparsity, block, batch, rounds, threads, max_density)
    DenseConfig, quantize_, prepare_pt2e, convert_pt2e, aq, xq = _torchao()
    block = (int(block[0]), int(block[1]))
    torch.manual_seed(seed)
    n = 5
    kernel = tsb.info()["active_kernel"]
    out(f"[1/{n}] float MLP {FEATURES}->{HIDDEN}->{HIDDEN}->{CLASSES}, batch {batch}, our kernel '{kernel}'; "
        f"prune fc1, fc2, fc3: {block[0]}x{block[1]} blocks, {sparsity:.0%}")
    model = MLP().eval()
    _sparsify(model, sparsity, block)
    x = torch.randn(batch, FEATURES)
    calib = torch.randn(256, FEATURES)
    eval_x = torch.randn(1024, FEATURES)
    with torch.no_grad():
        ref = model(eval_x)

    out(f"[2/{n}] quantize_: torchao's Int8DynamicActivationInt8WeightConfig (dense int8) and "
        f"SparseInt8DynamicActivationInt8WeightConfig(max_density={max_density}) with it as dense fallback")
    pairs = []
    dense = copy.deepcopy(model)
    quantize_(dense, DenseConfig())
    ours = copy.deepcopy(model)
    quantize_(ours, SparseInt8DynamicActivationInt8WeightConfig(max_density=max_density, dense_config=DenseConfig()))
    sparse = [name for name in LAYERS if isinstance(getattr(ours, name), tsb.nn.dynamic.Linear)]
    dense_layers = [name for name in LAYERS if name not in sparse]
    out(f"      sparse: {', '.join(sparse) or 'none'}; torchao's dense int8: {', '.join(dense_layers) or 'none'}")
    pairs.append(dict(flow="quantize_", mode="dynamic", dense=dense, ours=ours, sparse=len(sparse)))

    quantizer_name = _quantizer(aq, xq, False)[1]
    out(f"[3/{n}] PT2E: torch.export, prepare_pt2e / convert_pt2e with {quantizer_name}, then lower_pt2e")
    with torch.no_grad():
        for mode in ("static", "dynamic"):
            # The batch dimension stays dynamic, so that calibration and evaluation take one large batch.
            exported = torch.export.export(copy.deepcopy(model), (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
            prepared = prepare_pt2e(exported.module(), _quantizer(aq, xq, mode == "dynamic")[0])
            prepared(calib)
            converted = convert_pt2e(prepared)
            lowered = lower_pt2e(copy.deepcopy(converted), model, max_density=max_density)
            for info in lowered.tsb_lowered:
                what = (f"torch_sparse_backend::{info.op}" if info.op else f"stays dense: {info.reason}")
                out(f"      {mode:7} {info.name}: {what}")
            pairs.append(dict(flow="PT2E", mode=mode, dense=converted, ours=lowered,
                              sparse=sum(i.op is not None for i in lowered.tsb_lowered)))

    out(f"[4/{n}] checks: ours exported, saved and loaded, and under torch.compile(fullgraph=True), "
        "give the eager outputs; top-1 agreement with fp32")
    exported_identical = compiled_identical = True
    torch._dynamo.reset()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in pairs:
            eager = p["ours"](x)
            exported_identical &= torch.equal(_roundtrip(p["ours"], x)(x), eager)
            # Without freezing: with it, inductor also rewrites the layers left dense (to oneDNN
            # int8), which round differently from their eager float emulation.
            compiled_identical &= torch.equal(torch.compile(p["ours"], fullgraph=True)(x), eager)
            d, o = p["dense"](eval_x), p["ours"](eval_x)
            out(f"      {p['flow']:9} {p['mode']:7}: top-1 agreement with fp32: torchao dense {_agreement(d, ref):.3f}, "
                f"ours {_agreement(o, ref):.3f}")
    out(f"      exported, saved and loaded: identical {exported_identical}; compiled: identical {compiled_identical}")

    out(f"[5/{n}] latency, batch {batch}, {threads} thread{'s' if threads > 1 else ''}: median of {rounds} rounds, "
        "every contender sampled once per round (compiling first)")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    contenders, rows = [], []
    try:
        torch._dynamo.reset()
        with torch.no_grad(), torch._inductor.config.patch(freezing=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for p in pairs:
                forms = [("torch.compile", torch.compile(p["dense"]), torch.compile(p["ours"]))]
                if p["flow"] == "quantize_":
                    forms.insert(0, ("module", p["dense"], p["ours"]))
                for form, d, o in forms:
                    d(x), o(x)                     # compile here, not while timing
                    cd = Contender(f"{p['flow']} {p['mode']} {form} dense", lambda m=d: m(x))
                    co = Contender(f"{p['flow']} {p['mode']} {form} ours", lambda m=o: m(x))
                    contenders += [cd, co]
                    rows.append((p, form, cd, co))
            time_in_turns(contenders, rounds)
    finally:
        torch.set_num_threads(saved_threads)

    models = [dict(flow=p["flow"], mode=p["mode"], form=form, sparse_layers=p["sparse"], dense_ms=cd.ms,
                   ours_ms=co.ms, speedup=cd.ms / co.ms if p["sparse"] else None)
              for p, form, cd, co in rows]
    out("")
    out("Speedup = torchao dense int8 / ours, same flow, mode and form:")
    out("")
    out("| flow | mode | run as | torchao dense int8 ms | torch_sparse_backend ms | layers sparse | speedup |")
    out("|---|---|---|---|---|---|---|")
    for r in models:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "none claimed (no layer sparse)"
        out(f"| {r['flow']} | {r['mode']} | {r['form']} | {r['dense_ms']:.3f} | {r['ours_ms']:.3f} "
            f"| {r['sparse_layers']} of {len(LAYERS)} | {speedup} |")
    if any(p["flow"] == "PT2E" and p["mode"] == "static" and p["sparse"] < len(LAYERS) for p in pairs):
        out("")
        out("PT2E static: a linear whose output is not quantized (here the last, fc3) stays dense: our "
            "static ops produce\nuint8, so lower_pt2e leaves it to inductor's dense int8 path.")
    return dict(models=models, exported_identical=exported_identical, compiled_identical=compiled_identical,
                kernel=kernel, batch=batch, threads=threads, block=block, sparsity=sparsity)

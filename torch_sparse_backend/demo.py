"""``python -m torch_sparse_backend demo``: prune, quantize, script and time a small model.

``--flow torchao`` runs the same model through torchao's ``quantize_`` and PT2E
flows instead (:mod:`torch_sparse_backend.demo_torchao`).

Everything is made in code (no downloads): a 3-layer MLP with random weights is
pruned to block sparsity with torch.ao.pruning and quantized, static and dynamic,
through the two torch.ao flows: eager ``convert`` and FX ``prepare_fx`` /
``convert_fx``. Each flow converts the same calibrated model twice, once with
torch's defaults (dense int8) and once with this package's hooks, so the two
models share every quantization parameter and differ only in the modules that
run. Each pair is then compared like for like: eager module against eager
module, TorchScript against TorchScript, on the same inputs, with the contenders
sampled in turns and the median kept. A layer whose blocks are too dense stays
torch's dense int8 module (the dense fallback); the demo counts and labels those,
and a model with no sparse layer is reported as running torch's dense int8, with
no speedup claimed for this package.
"""

from __future__ import annotations

import copy
import io
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.ao.quantization as tq
from torch.ao.pruning import WeightNormSparsifier
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import torch_sparse_backend as tsb
from torch_sparse_backend.nn._base import SparseLinearBase

__all__ = ["MLP", "check_arguments", "main", "plot", "run", "time_in_turns"]

HIDDEN = 768
FEATURES = 256
CLASSES = 64
LAYERS = ("fc1", "fc2", "fc3")


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


@dataclass
class Contender:
    """One thing to time: ``fn`` runs a forward call under quantized engine ``engine``."""

    name: str
    fn: Callable[[], object]
    engine: str | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(self.samples) * 1e3


def time_in_turns(contenders: list[Contender], rounds: int, sample_seconds: float = 3e-3) -> None:
    """Fills each contender's ``samples`` (seconds per call).

    Every round times each contender once, in an order that rotates from round
    to round, so that a change of machine load hits all of them alike. A sample
    is a loop of calls lasting about ``sample_seconds``, after one untimed call
    (so each contender is timed with its weights in cache, as when it runs
    alone); engines are switched outside the timed loop.
    """
    saved_engine = torch.backends.quantized.engine
    loops = []
    try:
        for c in contenders:
            _set_engine(c.engine)
            for _ in range(3):
                c.fn()
            t0 = time.perf_counter()
            c.fn()
            loops.append(max(1, int(sample_seconds / max(time.perf_counter() - t0, 1e-7))))
        order = list(range(len(contenders)))
        for r in range(rounds):
            shift = r % len(order)
            for i in order[shift:] + order[:shift]:
                c, n = contenders[i], loops[i]
                _set_engine(c.engine)
                c.fn()  # brings its weights back into cache after the other contenders ran
                t0 = time.perf_counter()
                for _ in range(n):
                    c.fn()
                c.samples.append((time.perf_counter() - t0) / n)
    finally:
        torch.backends.quantized.engine = saved_engine


def _set_engine(engine: str | None) -> None:
    if engine is not None and torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine


def _stage(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text}", flush=True)


def _sparsify(model: torch.nn.Module, level: float, block: tuple[int, int]) -> None:
    sparsifier = WeightNormSparsifier(sparsity_level=level, sparse_block_shape=block)
    sparsifier.prepare(model, [{"tensor_fqn": f"{name}.weight"} for name in LAYERS])
    sparsifier.step()
    sparsifier.squash_mask(params_to_keep=("sparse_block_shape",))


def _eager_static(model: torch.nn.Module, calib: torch.Tensor, max_density: float):
    prepared = copy.deepcopy(model).eval()
    prepared.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(prepared, inplace=True)
    prepared(calib)
    dense = tq.convert(copy.deepcopy(prepared))
    ours = tq.convert(prepared, mapping=tsb.get_default_static_sparse_quant_module_mappings(max_density))
    return dense, ours


def _eager_dynamic(model: torch.nn.Module, max_density: float):
    spec = {torch.nn.Linear: tq.default_dynamic_qconfig}
    dense = tq.quantize_dynamic(copy.deepcopy(model).eval(), spec)
    ours = tq.quantize_dynamic(copy.deepcopy(model).eval(), spec,
                               mapping=tsb.get_default_dynamic_sparse_quant_module_mappings(max_density))
    return dense, ours


def _fx(model: torch.nn.Module, calib: torch.Tensor, mode: str, max_density: float):
    if mode == "static":
        qconfig_mapping = tq.get_default_qconfig_mapping("x86")
    else:
        qconfig_mapping = tq.QConfigMapping().set_global(tq.default_dynamic_qconfig)
    prepared = prepare_fx(copy.deepcopy(model).eval(), qconfig_mapping, (calib,),
                          backend_config=tsb.get_sparse_backend_config())
    prepared(calib)
    dense = _scriptable(convert_fx(copy.deepcopy(prepared), backend_config=tsb.get_sparse_backend_config()))
    ours = tsb.convert_fx(prepared, max_density=max_density)
    return dense, ours


def _scriptable(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drops the Tensor annotations of forward's inputs and output, as tsb.convert_fx does.

    MLP.forward's annotations are strings (``from __future__ import annotations``),
    which torch's convert_fx output spells as a name torch.jit.script cannot resolve.
    """
    for node in graph_module.graph.nodes:
        if node.op in ("placeholder", "output") and node.type in (torch.Tensor, "torch.Tensor", "Tensor"):
            node.type = None
    graph_module.recompile()
    return graph_module


def _torch_sparse(model: torch.nn.Module, calib: torch.Tensor, mode: str):
    """torch's own sparse modules (static under fbgemm, dynamic under qnnpack, 1x4 only)."""
    if mode == "static":
        torch.backends.quantized.engine = "fbgemm"
        prepared = copy.deepcopy(model).eval()
        prepared.qconfig = tq.get_default_qconfig("fbgemm")
        tq.prepare(prepared, inplace=True)
        prepared(calib)
        mapping = dict(tq.get_default_static_quant_module_mappings())
        mapping.update(tq.get_default_static_sparse_quant_module_mappings())
        return tq.convert(prepared, mapping=mapping), "fbgemm"
    torch.backends.quantized.engine = "qnnpack"
    return tq.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear: tq.default_dynamic_qconfig},
                               mapping=tq.get_default_dynamic_sparse_quant_module_mappings()), "qnnpack"


def _script_roundtrip(model: torch.nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _sparse_layers(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, SparseLinearBase)]


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def _layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each linear layer of ``model`` sees on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_pre_hook(
        lambda _m, args, name=name: seen.__setitem__(name, args[0])) for name in LAYERS]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def check_arguments(sparsity: float, block: tuple[int, int], batch: int, rounds: int, threads: int,
                    max_density: float) -> None:
    """Raises ValueError naming the first argument of :func:`run` that is out of range."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if len(block) != 2 or not all(b in (1, 2, 4, 8, 16) for b in block):
        raise ValueError(f"block must be two sizes from 1, 2, 4, 8, 16, got {tuple(block)}")
    for name, value in (("batch", batch), ("rounds", rounds), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density}")


@dataclass
class Pair:
    """Torch's dense int8 model and ours for one flow and mode, from one calibrated model."""

    flow: str
    mode: str
    dense: torch.nn.Module
    ours: torch.nn.Module
    sparse: list[str]
    dense_ts: torch.jit.ScriptModule | None = None
    ours_ts: torch.jit.ScriptModule | None = None


def run(sparsity: float = 0.8, block: tuple[int, int] = (1, 4), batch: int = 16, rounds: int = 31,
        threads: int = 1, max_density: float = tsb.DEFAULT_MAX_DENSITY, seed: int = 0,
        out: Callable[[str], None] = print) -> dict[str, object]:
    """Runs the demo, prints its report through ``out`` and returns the measurements.

    The result has ``layers`` (per layer and mode: shape, block, density, whether
    it runs sparse, kernel, times), ``models`` (per flow, mode and form: times and
    speedups) and the checks ``scripted_identical`` and ``static_max_abs_diff``.
    """
    check_arguments(sparsity, block, batch, rounds, threads, max_density)
    block = (int(block[0]), int(block[1]))
    torch.manual_seed(seed)
    n = 6
    if platform.machine().lower() in ("aarch64", "arm64") and torch.backends.quantized.engine in ("x86", "fbgemm"):
        # torch's default engine on aarch64 is x86, whose dense int8 kernels (the
        # baseline here, and every layer that stays dense) run on x86 only.
        torch.backends.quantized.engine = "qnnpack"
    engine = torch.backends.quantized.engine
    kernel = tsb.info()["active_kernel"]
    out(f"[1/{n}] float MLP {FEATURES}->{HIDDEN}->{HIDDEN}->{CLASSES}, batch {batch}, "
        f"our kernel '{kernel}', torch quantized engine '{engine}'")
    model = MLP().eval()
    calib = torch.randn(256, FEATURES)
    x = torch.randn(batch, FEATURES)
    eval_x = torch.randn(1024, FEATURES)

    out(f"[2/{n}] prune fc1, fc2, fc3 with WeightNormSparsifier: {block[0]}x{block[1]} blocks, {sparsity:.0%}")
    _sparsify(model, sparsity, block)
    with torch.no_grad():
        ref = model(eval_x)

    out(f"[3/{n}] quantize, each flow converting one calibrated model twice: torch's dense int8 and ours")
    pairs = []
    with torch.no_grad():
        for flow, mode, (dense, ours) in (
            ("eager", "static", _eager_static(model, calib, max_density)),
            ("eager", "dynamic", _eager_dynamic(model, max_density)),
            ("FX", "static", _fx(model, calib, "static", max_density)),
            ("FX", "dynamic", _fx(model, calib, "dynamic", max_density)),
        ):
            pairs.append(Pair(flow, mode, dense, ours, _sparse_layers(ours)))
    rows = tsb.summary(pairs[0].ours, print_table=False)
    n_sparse = len(pairs[0].sparse)
    for r in rows:
        block_s = "x".join(map(str, block))
        if r["kernel"].startswith("sparse"):
            what = f"runs sparse ({r['kernel'][8:-1]})"
        else:
            what = f"dense fallback: torch's dense int8 (block density above max_density {max_density:.2f})"
        out(f"      {r['name']}: block {block_s} density {tsb.block_density(getattr(model, r['name']).weight, block):.3f}, {what}")
    out(f"      {n_sparse} of {len(LAYERS)} layers run on torch_sparse_backend's sparse kernels")

    out(f"[4/{n}] TorchScript: script, save and load every quantized model and the fp32 one")
    identical = True
    with torch.no_grad():
        fp32_ts = _script_roundtrip(model)
        for p in pairs:
            p.dense_ts = _script_roundtrip(p.dense)
            p.ours_ts = _script_roundtrip(p.ours)
            identical &= torch.equal(p.ours_ts(eval_x), p.ours(eval_x))
    out(f"      loaded models give the same outputs as before saving: {identical}")

    out(f"[5/{n}] accuracy on {len(eval_x)} inputs: ours against torch's dense int8 of the same flow and mode")
    static_diff = 0.0
    with torch.no_grad():
        for p in pairs:
            d, o = p.dense(eval_x), p.ours(eval_x)
            diff = float((o - d).abs().max())
            if p.mode == "static":
                static_diff = max(static_diff, diff)
            out(f"      {p.flow:5} {p.mode:7}: top-1 agreement with fp32: dense {_agreement(d, ref):.3f}, "
                f"ours {_agreement(o, ref):.3f}; max abs diff ours vs dense {diff:.4f}")
    out("      static: the same quantized model, so ours equals torch's dense int8 bit for bit. "
        "dynamic: torch's dense\n"
        f"      dynamic Linear under '{engine}' quantizes activations to 7 bits (reduce_range), "
        "ours to 8 bits\n"
        "      (as torch's under qnnpack), hence the small difference. The FX static model fuses "
        "each linear with\n"
        "      its ReLU, so its output scales differ from the eager model's: compare each flow with itself.")

    torch_sparse = {}
    saved_engine = torch.backends.quantized.engine
    with torch.no_grad():
        for mode in ("static", "dynamic"):
            try:
                ts_model, ts_engine = _torch_sparse(model, calib, mode)
                ts_model(x)
                torch_sparse[mode] = (ts_model, ts_engine)
            except (RuntimeError, AssertionError) as e:
                out(f"      torch's own sparse {mode} modules do not run here: {str(e).splitlines()[0]}")
            finally:
                torch.backends.quantized.engine = saved_engine

    out(f"[6/{n}] latency, batch {batch}, {threads} thread{'s' if threads > 1 else ''}: "
        f"median of {rounds} rounds, every contender sampled once per round")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = _time_all(model, fp32_ts, pairs, torch_sparse, x, rounds, engine)
    finally:
        torch.set_num_threads(saved_threads)
    result.update(scripted_identical=identical, static_max_abs_diff=static_diff, sparse_layers=n_sparse,
                  engine=engine, kernel=kernel, batch=batch, threads=threads, block=block, sparsity=sparsity)
    _report(result, out)
    return result


def _time_all(model, fp32_ts, pairs, torch_sparse, x, rounds, engine) -> dict[str, object]:
    with torch.no_grad():
        contenders = [Contender("fp32 module", lambda: model(x)), Contender("fp32 TorchScript", lambda: fp32_ts(x))]
        models = []
        for p in pairs:
            entry = dict(flow=p.flow, mode=p.mode, sparse=len(p.sparse))
            for form, dense, ours in (("module", p.dense, p.ours), ("TorchScript", p.dense_ts, p.ours_ts)):
                cd = Contender(f"{p.flow} {p.mode} {form} dense", lambda m=dense: m(x), engine)
                co = Contender(f"{p.flow} {p.mode} {form} ours", lambda m=ours: m(x), engine)
                contenders += [cd, co]
                entry[form] = (cd, co)
            models.append(entry)
        for mode, (ts_model, ts_engine) in torch_sparse.items():
            contenders.append(Contender(f"torch sparse {mode}", lambda m=ts_model: m(x), ts_engine))

        # Per layer (eager modules, static and dynamic): the input each layer sees in
        # the dense model, given to the dense layer and to ours.
        layers = []
        float_inputs = _layer_inputs(model, x)
        for p in pairs[:2]:
            inputs = _layer_inputs(p.dense, x)
            for name in LAYERS:
                lin, dense, ours = getattr(model, name), getattr(p.dense, name), getattr(p.ours, name)
                sparse = isinstance(ours, SparseLinearBase)
                xin, fin = inputs[name], float_inputs[name]
                entry = dict(
                    mode=p.mode, name=name, out_features=lin.out_features, in_features=lin.in_features,
                    density=float(tsb.block_density(lin.weight, tuple(lin.sparse_params["sparse_block_shape"]))),
                    block=tuple(lin.sparse_params["sparse_block_shape"]), sparse=sparse,
                    kernel=ours.kernel if sparse else f"torch dense int8 ({engine})",
                    fp32=Contender(f"{name} fp32", lambda m=lin, v=fin: m(v)),
                    dense=Contender(f"{p.mode} {name} dense", lambda m=dense, v=xin: m(v), engine),
                    ours=Contender(f"{p.mode} {name} ours", lambda m=ours, v=xin: m(v), engine) if sparse else None,
                )
                contenders += [c for c in (entry["fp32"], entry["dense"], entry["ours"]) if c is not None]
                layers.append(entry)
        time_in_turns(contenders, rounds)

    def ms(c: Contender | None) -> float | None:
        return None if c is None else c.ms

    model_rows = []
    fp32_ms = {"module": contenders[0].ms, "TorchScript": contenders[1].ms}
    for e in models:
        for form in ("module", "TorchScript"):
            cd, co = e[form]
            model_rows.append(dict(
                flow=e["flow"], mode=e["mode"], form=form, sparse_layers=e["sparse"], fp32_ms=fp32_ms[form],
                dense_ms=cd.ms, ours_ms=co.ms, speedup=cd.ms / co.ms if e["sparse"] else None,
            ))
    torch_sparse_ms = {mode: c.ms for mode in torch_sparse
                       for c in contenders if c.name == f"torch sparse {mode}"}
    layer_rows = [dict(
        mode=e["mode"], name=e["name"], out_features=e["out_features"], in_features=e["in_features"],
        block=e["block"], density=e["density"], sparse=e["sparse"], kernel=e["kernel"],
        fp32_ms=ms(e["fp32"]), dense_ms=ms(e["dense"]), ours_ms=ms(e["ours"]),
        speedup=e["dense"].ms / e["ours"].ms if e["sparse"] else None,
    ) for e in layers]
    return dict(models=model_rows, layers=layer_rows, torch_sparse_ms=torch_sparse_ms)


def _report(result: dict[str, object], out: Callable[[str], None]) -> None:
    engine = result["engine"]
    out("")
    out("Per layer (out x in), eager modules, on the input the layer sees in the model; "
        "speedup = dense int8 / ours:")
    for r in result["layers"]:
        head = (f"  {r['mode']:7} {r['name']} {r['out_features']}x{r['in_features']} "
                f"block {r['block'][0]}x{r['block'][1]} density {r['density']:.3f}: ")
        if r["sparse"]:
            out(head + f"ours ({r['kernel']}) {r['ours_ms']:.3f} ms vs dense int8 {r['dense_ms']:.3f} ms, "
                f"{r['speedup']:.2f}x")
        else:
            out(head + f"dense fallback, runs torch's dense int8 ({r['dense_ms']:.3f} ms), no sparse kernel")
    out("")
    n_layers = len(LAYERS)
    out(f"Whole model, run as a Python module and as TorchScript (saved and loaded); fp32: module "
        f"{result['models'][0]['fp32_ms']:.3f} ms, TorchScript {result['models'][1]['fp32_ms']:.3f} ms. "
        f"Speedup = torch dense int8 / ours, same flow, mode and form:")
    out("")
    out(f"| flow | mode | run as | torch dense int8 ({engine}) ms | torch_sparse_backend ms | layers sparse | speedup |")
    out("|---|---|---|---|---|---|---|")
    for r in result["models"]:
        if r["sparse_layers"]:
            ours, speedup = f"{r['ours_ms']:.3f}", f"{r['speedup']:.2f}x"
        else:
            ours, speedup = f"{r['ours_ms']:.3f} (torch's dense int8: no layer sparse)", "none claimed"
        out(f"| {r['flow']} | {r['mode']} | {r['form']} | {r['dense_ms']:.3f} | {ours} "
            f"| {r['sparse_layers']} of {n_layers} | {speedup} |")
    for mode, ms in result["torch_sparse_ms"].items():
        out(f"torch's own sparse modules (torch.ao.nn.sparse), eager convert, {mode}, Python module: {ms:.3f} ms")
    if not result["sparse_layers"]:
        out("")
        out(f"No layer runs sparse: every layer's block density is above max_density; the "
            f"torch_sparse_backend column times torch's dense int8 modules again, so it shows "
            f"no speedup of this package's kernels.")
    elif result["sparse_layers"] < n_layers:
        out("")
        out(f"{n_layers - result['sparse_layers']} of {n_layers} layers are dense fallbacks (torch's dense "
            f"int8); the speedup comes from the {result['sparse_layers']} sparse ones.")


def plot(result: dict[str, object], path: str) -> None:
    """Writes a PNG: latency per layer and for the whole model, fp32 vs dense int8 vs ours."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, mode in zip(axes, ("static", "dynamic")):
        layers = [r for r in result["layers"] if r["mode"] == mode]
        whole = next(r for r in result["models"] if r["flow"] == "eager" and r["mode"] == mode
                     and r["form"] == "module")
        labels = [f"{r['name']}\n{r['out_features']}x{r['in_features']}" for r in layers] + ["model"]
        series = (
            ("fp32", [r["fp32_ms"] for r in layers] + [whole["fp32_ms"]], "#999999"),
            (f"torch dense int8 ({result['engine']})", [r["dense_ms"] for r in layers] + [whole["dense_ms"]],
             "#4c72b0"),
            ("torch_sparse_backend", [r["ours_ms"] if r["sparse"] else float("nan") for r in layers]
             + [whole["ours_ms"] if whole["sparse_layers"] else float("nan")], "#dd8452"),
        )
        width = 0.26
        for i, (name, values, color) in enumerate(series):
            xs = [j + (i - 1) * width for j in range(len(labels))]
            ax.bar(xs, values, width, label=name, color=color)
        for j, r in enumerate(layers):
            if not r["sparse"]:
                ax.annotate("dense\nfallback", (j + width, 0), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        threads = result["threads"]
        ax.set_title(f"{mode}, eager modules, batch {result['batch']}, {threads} thread{'s' if threads > 1 else ''}")
        ax.set_ylabel("ms per call (median)")
        ax.legend(fontsize=8)
    sparsity, block = result["sparsity"], result["block"]
    fig.suptitle(f"{block[0]}x{block[1]} blocks, {sparsity:.0%} sparsity, kernel {result['kernel']}, "
                 f"{result['sparse_layers']} of {len(LAYERS)} layers sparse", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def main(sparsity: float = 0.8, block: tuple[int, int] = (1, 4), batch: int = 16, rounds: int = 31,
         threads: int = 1, max_density: float = tsb.DEFAULT_MAX_DENSITY, plot_path: str | None = None,
         flow: str = "torch.ao") -> int:
    if flow not in ("torch.ao", "torchao"):
        raise ValueError(f"flow must be 'torch.ao' or 'torchao', got {flow!r}")
    if plot_path is not None and flow == "torchao":
        raise ValueError("--plot draws the torch.ao flow's per-layer times; the torchao flow prints a table only")
    if plot_path is not None:
        _pyplot()  # fail before the work, not after it
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if flow == "torchao":
        from . import demo_torchao

        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's pytree, when copying GraphModules

        result = demo_torchao.run(sparsity=sparsity, block=block, batch=batch, rounds=rounds, threads=threads,
                                  max_density=max_density)
        ok = result["exported_identical"] and result["compiled_identical"]
        print()
        print("demo finished" if ok else "demo FAILED: see the checks above")
        return 0 if ok else 1
    result = run(sparsity=sparsity, block=block, batch=batch, rounds=rounds, threads=threads,
                 max_density=max_density)
    if plot_path is not None:
        plot(result, plot_path)
        print(f"wrote {plot_path}")
    ok = result["scripted_identical"] and result["static_max_abs_diff"] == 0.0
    print()
    print("demo finished" if ok else "demo FAILED: see the checks above")
    return 0 if ok else 1

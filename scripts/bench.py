"""Side-by-side benchmark: torch_sparse_backend vs torch's dense int8, torch's sparse ops and fp32.

One process, the same inputs for every contender, medians of repeated timed runs.

    python scripts/bench.py                   # full grid, markdown table + target summary
    python scripts/bench.py --quick           # a smaller grid
    python scripts/bench.py --overhead-only   # only the per-call overhead section (M=1, 64x64)
    python scripts/bench.py --json out.json --plot speedup.png

Our side is timed through torch_sparse_backend.functional, which is what the
modules call in eager mode; the overhead section also times the raw torch.ops
calls, and modules (ours, torch's dense int8 and fp32) called as modules.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_sparse_backend as tsb  # noqa: E402
import torch_sparse_backend.functional as TSBF  # noqa: E402

warnings.filterwarnings("ignore")
OPS = torch.ops.torch_sparse_backend
SHAPES = [(768, 768), (3072, 768), (768, 3072)]  # (out_features, in_features)
BATCHES = [1, 16, 128]
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95]
BLOCKS = [(1, 4), (8, 1)]
THREADS = [1, 2]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_seconds(fn: Callable[[], object], min_time: float, samples: int) -> float:
    """Median over `samples` of the mean time of a loop that runs at least `min_time` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    iters = max(1, int(min_time / once))
    results = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        results.append((time.perf_counter() - t0) / iters)
    return statistics.median(results)


def block_sparse_weight(n: int, k: int, block: tuple[int, int], sparsity: float, g: torch.Generator):
    """Per-channel qint8 weight with exactly round(sparsity * blocks) zero blocks."""
    rb, cb = block
    nbr, nbc = n // rb, k // cb
    keep = torch.ones(nbr * nbc, dtype=torch.bool)
    keep[torch.randperm(nbr * nbc, generator=g)[: round(sparsity * nbr * nbc)]] = False
    mask = keep.reshape(nbr, nbc).repeat_interleave(rb, 0).repeat_interleave(cb, 1)
    values = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    values[values == 0] = 1
    w_int = values * mask
    scales = torch.rand(n, dtype=torch.double, generator=g) * 0.01 + 0.001
    return torch._make_per_channel_quantized_tensor(w_int, scales, torch.zeros(n, dtype=torch.long), 0)


class Bench:
    def __init__(self, min_time: float, samples: int) -> None:
        self.min_time = min_time
        self.samples = samples

    def time(self, fn: Callable[[], object], engine: str | None = None) -> float | None:
        prev = torch.backends.quantized.engine
        try:
            if engine:
                torch.backends.quantized.engine = engine
            return median_seconds(fn, self.min_time, self.samples) * 1e3
        except RuntimeError:
            return None  # torch has no such op for this engine / block shape
        finally:
            torch.backends.quantized.engine = prev

    def time_in_turns(self, fns: dict[str, Callable[[], object]], engine: str) -> dict[str, float]:
        """Median ms of each contender, their samples taken in turns, under `engine`."""
        prev = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = engine
            times = median_seconds_interleaved(fns, self.min_time, self.samples)
            return {name: t * 1e3 for name, t in times.items()}
        finally:
            torch.backends.quantized.engine = prev


def run(args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(0)
    bench = Bench(args.min_time, args.samples)
    shapes = SHAPES[:1] if args.quick else SHAPES
    batches = [1, 128] if args.quick else BATCHES
    sparsities = [0.5, 0.8, 0.9] if args.quick else SPARSITIES
    rows = []
    for threads in [] if args.overhead_only else THREADS:
        torch.set_num_threads(threads)
        for n, k in shapes:
            w_dense = torch._make_per_channel_quantized_tensor(
                torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g),
                torch.rand(n, dtype=torch.double, generator=g) * 0.01 + 0.001,
                torch.zeros(n, dtype=torch.long),
                0,
            )
            bias = torch.randn(n, generator=g)
            w_float = torch.randn(n, k, generator=g)
            torch.backends.quantized.engine = "fbgemm"
            dense_packed = torch.ops.quantized.linear_prepack(w_dense, bias)
            for m in batches:
                x = torch.randn(m, k, generator=g)
                xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
                base = {
                    "threads": threads, "out": n, "in": k, "M": m,
                    "fp32_ms": bench.time(lambda: F.linear(x, w_float, bias)),
                }
                for sparsity in sparsities:
                    weights = {block: block_sparse_weight(n, k, block, sparsity, g) for block in BLOCKS}
                    packed = {block: OPS.qlinear_prepack(w, bias, *block) for block, w in weights.items()}
                    # Ours (every block shape) and dense int8 sampled in turns, so that the
                    # load of a shared machine hits both sides of each speedup, and both
                    # block shapes of the 8x1 / 1x4 ratio, alike.
                    contenders = {
                        "dense_static_ms": lambda: torch.ops.quantized.linear(xq, dense_packed, 0.1, 128),
                        "dense_dynamic_ms": lambda: torch.ops.quantized.linear_dynamic(x, dense_packed, False),
                    }
                    if threads > 1:
                        # Thread scaling from samples taken in turns with the
                        # multi-threaded ones, not from the 1-thread rows measured
                        # minutes earlier.
                        contenders["dense_static_1thread_ms"] = on_one_thread(
                            lambda: torch.ops.quantized.linear(xq, dense_packed, 0.1, 128), threads)
                    for block, ours in packed.items():
                        contenders.update(ours_contenders(block, ours, x, xq, threads))
                    times = bench.time_in_turns(contenders, "fbgemm")
                    for block, w in weights.items():
                        ours = packed[block]
                        name = f"{block[0]}x{block[1]}"
                        row = dict(base, sparsity=sparsity, block=name, kernel=ours.kernel())
                        row.update({key: t for key, t in times.items() if "/" not in key})
                        row.update({key.split("/")[1]: t for key, t in times.items() if key.startswith(name + "/")})
                        row["torch_sparse_static_ms"] = None
                        row["torch_sparse_dynamic_ms"] = None
                        if not args.no_torch_sparse:
                            row.update(torch_sparse_times(bench, w, bias, block, x, xq))
                        nnz = int(w.int_repr().ne(0).sum())
                        row["packed_bytes"] = int(ours.packed_bytes())
                        row["packed_budget_bytes"] = int(1.5 * nnz + 8 * n)
                        rows.append(row)
                        print(_progress(row), file=sys.stderr, flush=True)
    torch.set_num_threads(THREADS[-1])
    overhead = overhead_row(bench, g)
    return {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "kernel": tsb.info()["active_kernel"],
        "rows": rows,
        "overhead": overhead,
    }


def ours_contenders(block: tuple[int, int], ours, x: torch.Tensor, xq: torch.Tensor, threads: int) -> dict:
    """Our static and dynamic calls on one packed weight, keyed "<block>/<JSON key>"."""
    name = f"{block[0]}x{block[1]}"
    out = {
        f"{name}/ours_static_ms": lambda: TSBF.qlinear(xq, ours, 0.1, 128),
        f"{name}/ours_dynamic_ms": lambda: TSBF.qlinear_dynamic(x, ours),
    }
    if threads > 1:
        out[f"{name}/ours_static_1thread_ms"] = on_one_thread(lambda: TSBF.qlinear(xq, ours, 0.1, 128), threads)
    return out


def torch_sparse_times(bench: Bench, w: torch.Tensor, bias: torch.Tensor, block: tuple[int, int],
                       x: torch.Tensor, xq: torch.Tensor) -> dict:
    """torch's own sparse ops on the same weight: static under fbgemm, dynamic under
    qnnpack; None where torch has no such op for the block shape."""
    out = {}
    try:
        torch.backends.quantized.engine = "fbgemm"
        ts = torch.ops.sparse.qlinear_prepack(w, bias, *block)
        out["torch_sparse_static_ms"] = bench.time(lambda: torch.ops.sparse.qlinear(xq, ts, 0.1, 128), "fbgemm")
    except RuntimeError:
        pass
    try:
        torch.backends.quantized.engine = "qnnpack"
        td = torch.ops.sparse.qlinear_prepack(w, bias, *block)
        out["torch_sparse_dynamic_ms"] = bench.time(lambda: torch.ops.sparse.qlinear_dynamic(x, td), "qnnpack")
    except RuntimeError:
        pass
    return out


def on_one_thread(fn: Callable[[], object], threads: int) -> Callable[[], None]:
    """`fn` run with 1 intra-op thread, then `threads` again."""

    def run_one() -> None:
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)

    return run_one


def median_seconds_interleaved(fns: dict[str, Callable[[], object]], min_time: float, samples: int) -> dict:
    """`median_seconds` for several contenders, their samples taken in turns, so that
    load changes on a shared machine hit all of them alike."""
    iters = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        iters[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            n = iters[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            results[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(r) for name, r in results.items()}


# Contenders of the overhead section: JSON key -> label.
OVERHEAD_ROWS = {
    "fp32_ms": "fp32 `F.linear`",
    "ours_static_ms": "ours static, `tsb.functional.qlinear`",
    "ours_dynamic_ms": "ours dynamic, `tsb.functional.qlinear_dynamic`",
    "ops_static_ms": "ours static, raw `torch.ops.torch_sparse_backend.qlinear`",
    "ops_dynamic_ms": "ours dynamic, raw `torch.ops.torch_sparse_backend.qlinear_dynamic`",
    "fp32_module_ms": "fp32 `torch.nn.Linear` module",
    "ao_static_module_ms": "torch dense int8 `torch.ao.nn.quantized.Linear` module (fbgemm)",
    "ao_dynamic_module_ms": "torch dense int8 `torch.ao.nn.quantized.dynamic.Linear` module (fbgemm)",
    "ours_static_module_ms": "ours static `tsb.nn.Linear` module",
    "ours_dynamic_module_ms": "ours dynamic `tsb.nn.dynamic.Linear` module",
}


def overhead_row(bench: Bench, g: torch.Generator) -> dict:
    """Per-call time of a 64x64 layer at batch 1 on 1 thread, where the call overhead
    dominates; fp32 F.linear is the yardstick (target: ours at most 2x)."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    prev_threads, prev_engine = torch.get_num_threads(), torch.backends.quantized.engine
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    try:
        w = block_sparse_weight(64, 64, (1, 4), 0.8, g)
        bias = torch.randn(64, generator=g)
        packed = OPS.qlinear_prepack(w, bias, 1, 4)
        x = torch.randn(1, 64, generator=g)
        xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        wf = torch.randn(64, 64, generator=g)
        fp32_module = torch.nn.Linear(64, 64).requires_grad_(False)
        ao_static = nnq.Linear(64, 64)
        ao_static.set_weight_bias(w, bias)
        ao_static.scale, ao_static.zero_point = 0.1, 128
        ao_dynamic = nnqd.Linear(64, 64)
        ao_dynamic.set_weight_bias(w, bias)
        ours_static = tsb.nn.Linear(64, 64, 1, 4)
        ours_static.set_weight_bias(w, bias, 1, 4)
        ours_static.scale, ours_static.zero_point = 0.1, 128
        ours_dynamic = tsb.nn.dynamic.Linear(64, 64, 1, 4)
        ours_dynamic.set_weight_bias(w, bias, 1, 4)
        fns = {
            "fp32_ms": lambda: F.linear(x, wf, bias),
            "ours_static_ms": lambda: TSBF.qlinear(xq, packed, 0.1, 128),
            "ours_dynamic_ms": lambda: TSBF.qlinear_dynamic(x, packed),
            "ops_static_ms": lambda: OPS.qlinear(xq, packed, 0.1, 128),
            "ops_dynamic_ms": lambda: OPS.qlinear_dynamic(x, packed),
            "fp32_module_ms": lambda: fp32_module(x),
            "ao_static_module_ms": lambda: ao_static(xq),
            "ao_dynamic_module_ms": lambda: ao_dynamic(x),
            "ours_static_module_ms": lambda: ours_static(xq),
            "ours_dynamic_module_ms": lambda: ours_dynamic(x),
        }
        assert list(fns) == list(OVERHEAD_ROWS)
        seconds = median_seconds_interleaved(fns, bench.min_time, bench.samples)
    finally:
        torch.set_num_threads(prev_threads)
        torch.backends.quantized.engine = prev_engine
    return {key: value * 1e3 for key, value in seconds.items()}


def overhead_markdown(o: dict) -> str:
    lines = [
        "Per-call overhead, M=1, 64x64 layer (1x4 blocks, 80% sparse), 1 thread; medians in us; "
        "ratio = time / fp32 `F.linear` time:",
        "",
        "| call | us | vs fp32 |",
        "|---|---|---|",
    ]
    for key, label in OVERHEAD_ROWS.items():
        if key in o:
            lines.append(f"| {label} | {_fmt(None if o[key] is None else o[key] * 1e3)} "
                         f"| {_fmt(_ratio(o[key], o['fp32_ms']), 'x')} |")
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _progress(r: dict) -> str:
    return (f"threads={r['threads']} {r['out']}x{r['in']} M={r['M']} {r['block']} {r['sparsity']:.0%}: "
            f"static {r['dense_static_ms'] / r['ours_static_ms']:.2f}x, "
            f"dynamic {r['dense_dynamic_ms'] / r['ours_dynamic_ms']:.2f}x vs dense int8")


def _fmt(v: float | None, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:.3f}{suffix}" if not suffix else f"{v:.2f}{suffix}"


def markdown(result: dict) -> str:
    lines = [
        f"CPU: {result['cpu']} ({result['machine']}), torch {result['torch']}, kernel `{result['kernel']}`; "
        "times are medians in ms; speedups are dense-int8 time / ours.",
        "",
    ]
    if result["rows"]:
        lines += [
            "| threads | out x in | M | block | sparsity | ours static | dense static | speedup | torch sparse static | vs torch | "
            "ours dynamic | dense dynamic | speedup | torch sparse dynamic | vs torch | fp32 |",
            "|" + "---|" * 16,
        ]
    for r in result["rows"]:
        lines.append(
            f"| {r['threads']} | {r['out']}x{r['in']} | {r['M']} | {r['block']} | {r['sparsity']:.0%} "
            f"| {_fmt(r['ours_static_ms'])} | {_fmt(r['dense_static_ms'])} "
            f"| {_fmt(_ratio(r['dense_static_ms'], r['ours_static_ms']), 'x')} "
            f"| {_fmt(r['torch_sparse_static_ms'])} | {_fmt(_ratio(r['torch_sparse_static_ms'], r['ours_static_ms']), 'x')} "
            f"| {_fmt(r['ours_dynamic_ms'])} | {_fmt(r['dense_dynamic_ms'])} "
            f"| {_fmt(_ratio(r['dense_dynamic_ms'], r['ours_dynamic_ms']), 'x')} "
            f"| {_fmt(r['torch_sparse_dynamic_ms'])} | {_fmt(_ratio(r['torch_sparse_dynamic_ms'], r['ours_dynamic_ms']), 'x')} "
            f"| {_fmt(r['fp32_ms'])} |"
        )
    if result["rows"]:
        lines.append("")
    scaling = [r for r in result["rows"] if r.get("ours_static_1thread_ms")]
    if scaling:
        lines += [
            "Thread scaling, static: 1-thread time / multi-thread time, both sampled in turns in the same row.",
            "",
            "| threads | out x in | M | block | sparsity | ours | dense int8 |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['threads']} | {r['out']}x{r['in']} | {r['M']} | {r['block']} | {r['sparsity']:.0%} "
            f"| {_fmt(_ratio(r['ours_static_1thread_ms'], r['ours_static_ms']), 'x')} "
            f"| {_fmt(_ratio(r['dense_static_1thread_ms'], r['dense_static_ms']), 'x')} |"
            for r in scaling
        ]
        lines.append("")
    lines.append(overhead_markdown(result["overhead"]))
    return "\n".join(lines)


def targets(result: dict) -> str:
    """Checks the performance targets of the project against this run."""
    rows = result["rows"]
    one = [r for r in rows if r["threads"] == 1]
    out = []

    def speedups(pred, mode):
        key = f"ours_{mode}_ms"
        return [r[f"dense_{mode}_ms"] / r[key] for r in one if pred(r)]

    for sparsity, need in ((0.8, 3.0), (0.9, 5.0), (0.5, 1.3)):
        for mode in ("static", "dynamic"):
            s = speedups(lambda r: r["block"] == "1x4" and r["sparsity"] == sparsity, mode)
            if s:
                out.append(_check(f"1x4 {sparsity:.0%} {mode}: min speedup over dense int8 >= {need}x", min(s), need))
    for mode in ("static", "dynamic"):
        s = speedups(lambda r: r["sparsity"] >= 0.5, mode)
        if s:
            out.append(_check(f"never slower than dense int8 from 50% up ({mode}, both blocks)", min(s), 1.0))
    for mode in ("static", "dynamic"):
        vs = [r[f"torch_sparse_{mode}_ms"] / r[f"ours_{mode}_ms"] for r in one if r[f"torch_sparse_{mode}_ms"]]
        if vs:
            out.append(_check(f"vs torch's sparse {mode} op: min speedup >= 10x", min(vs), 10.0))
    by_key = {(r["out"], r["in"], r["M"], r["sparsity"], r["block"]): r for r in one}
    worst = None
    for (n, k, m, s, b), r in by_key.items():
        if b == "8x1" and (n, k, m, s, "1x4") in by_key:
            r14 = by_key[(n, k, m, s, "1x4")]
            for mode in ("static", "dynamic"):
                ratio = r[f"ours_{mode}_ms"] / r14[f"ours_{mode}_ms"]
                worst = ratio if worst is None else max(worst, ratio)
    if worst is not None:
        out.append(_check_at_most("8x1 time / 1x4 time <= 1.25 (worst case)", worst, 1.25))
    o = result["overhead"]
    out.append(_check_at_most("per-call overhead M=1 64x64: ours static / fp32 <= 2", o["ours_static_ms"] / o["fp32_ms"], 2.0))
    out.append(_check_at_most("per-call overhead M=1 64x64: ours dynamic / fp32 <= 2", o["ours_dynamic_ms"] / o["fp32_ms"], 2.0))
    two = [r for r in rows if r["threads"] == 2 and r["M"] == 128 and r.get("ours_static_1thread_ms")]
    if two:
        scal = [r["ours_static_1thread_ms"] / r["ours_static_ms"] for r in two]
        dense = [r["dense_static_1thread_ms"] / r["dense_static_ms"] for r in two]
        out.append(_check("2 threads vs 1 at M=128 (static): min speedup >= 1.7x", min(scal), 1.7)
                   + f" (median {statistics.median(scal):.2f}; dense int8 on the same samples: "
                   f"min {min(dense):.2f}, median {statistics.median(dense):.2f})")
    if rows:
        size = max(r["packed_bytes"] / r["packed_budget_bytes"] for r in rows)
        out.append(_check_at_most("packed bytes / (1.5 x nonzero bytes + 8 x out_features) <= 1", size, 1.0))
    return "\n".join(out)


def _check(text: str, value: float, minimum: float) -> str:
    return f"- [{'x' if value >= minimum else ' '}] {text}: measured {value:.2f}"


def _check_at_most(text: str, value: float, maximum: float) -> str:
    return f"- [{'x' if value <= maximum else ' '}] {text}: measured {value:.2f}"


def plot(result: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    rows = [r for r in result["rows"] if r["threads"] == 1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    cases = [(n, k, m) for (n, k) in sorted({(r["out"], r["in"]) for r in rows})
             for m in sorted({r["M"] for r in rows})]
    colors = plt.get_cmap("tab10")
    for ax, mode in zip(axes, ("static", "dynamic")):
        for i, (n, k, m) in enumerate(cases):  # one color per layer and batch, one line style per block
            for block, style in (("1x4", "-"), ("8x1", "--")):
                pts = sorted((r["sparsity"], r[f"dense_{mode}_ms"] / r[f"ours_{mode}_ms"])
                             for r in rows if (r["out"], r["in"], r["M"], r["block"]) == (n, k, m, block))
                if pts:
                    ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], style, color=colors(i % 10),
                            marker="o", markersize=3, label=f"{n}x{k} M={m} {block}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{mode}: speedup over dense int8 (fbgemm), 1 thread")
        ax.set_xlabel("sparsity (%)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("dense int8 time / torch_sparse_backend time")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{result['cpu']}, torch {result['torch']}, kernel {result['kernel']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller grid")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of speedup over dense int8 vs sparsity")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timed sample (default 0.02)")
    p.add_argument("--samples", type=int, default=7, help="timed samples per measurement; the median is kept")
    p.add_argument("--no-torch-sparse", action="store_true", help="skip torch's own (slow) sparse ops")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the per-call overhead section (M=1, 64x64), not the grid")
    args = p.parse_args(argv)
    if args.overhead_only and args.plot:
        p.error("--plot needs the grid; drop --overhead-only")
    result = run(args)
    print(markdown(result))
    print()
    print("Targets (1 thread unless noted):")
    print(targets(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

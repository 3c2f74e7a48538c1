"""Side-by-side benchmark: torch_sparse_backend vs torch's dense int8, torch's sparse ops and fp32.

One process, the same inputs for every contender, medians of repeated timed runs,
the contenders of a row sampled in turns.

    python scripts/bench.py                   # full grid, markdown table + target summary
    python scripts/bench.py --quick           # a smaller grid
    python scripts/bench.py --overhead-only   # only the per-call overhead section (M=1, 64x64)
    python scripts/bench.py --json out.json --plot speedup.png
    python scripts/bench.py --llm --json llm.json --plot llm.png   # LLM-size layers (issue 16)
    python scripts/bench.py --llm --shapes 11008x4096 --batches 1 --sparsities 0.8 --blocks 1x4 --threads 2

Our side is timed through torch_sparse_backend.functional, which is what the
modules call in eager mode; the overhead section also times the raw torch.ops
calls, and modules (ours, torch's dense int8 and fp32) called as modules.

Dense int8 is timed under every quantized engine whose dense static / dynamic op
runs on this machine (each is first tried once in a child process, since some
crash: torch 2.13's onednn `linear_dynamic` dies with SIGSEGV on some CPUs); the
`x86` engine, torch's default, runs fbgemm for linear, so it is timed as fbgemm.
Every row also has fp32 and bf16 `F.linear`. Speedups are given against torch's
default engine and against the fastest dense int8 engine of the row.

`--shapes`, `--batches`, `--sparsities`, `--blocks` and `--threads` replace the
grid's values (comma lists), to rerun one cell. In the LLM grid, rows with more
than 1 thread run only on 11008x4096 and 4096x4096 at M in {1, 128}, unless
`--shapes` / `--batches` are given: then on the shapes / batches given.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
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

# The LLM grid (issue 16): attention and MLP projections of 7B-class and BERT-base-class models.
LLM_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768), (768, 3072)]
LLM_BATCHES = [1, 2, 4, 8, 16, 32, 128]
LLM_SPARSITIES = [0.5, 0.8, 0.9]
# Rows with more than 1 thread, to bound the run time.
LLM_SCALING_SHAPES = [(11008, 4096), (4096, 4096)]
LLM_SCALING_BATCHES = [1, 128]

# /proc/cpuinfo flags that decide which kernels (ours and torch's) run.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve")

# torch's default quantized engine, before this script switches engines.
TORCH_DEFAULT_ENGINE = torch.backends.quantized.engine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """The CPU_FLAGS present in /proc/cpuinfo's first `flags` (x86) or `Features` (ARM) line."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    present: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            break
    return {flag: flag in present for flag in CPU_FLAGS}


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Command line lists
# ---------------------------------------------------------------------------

def _pairs(text: str, what: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        a, sep, b = item.strip().lower().partition("x")
        try:
            pair = (int(a), int(b))
        except ValueError:
            pair = None
        if not sep or pair is None or min(pair) < 1:
            raise argparse.ArgumentTypeError(f"bad {what} {item.strip()!r}: expected AxB, e.g. 4096x4096")
        out.append(pair)
    return out


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """"4096x4096,11008x4096" -> [(4096, 4096), (11008, 4096)] (out_features x in_features)."""
    return _pairs(text, "shape")


def parse_blocks(text: str) -> list[tuple[int, int]]:
    """"1x4,8x1" -> [(1, 4), (8, 1)] (rows x columns of a block)."""
    return _pairs(text, "block")


def parse_ints(text: str) -> list[int]:
    """"1,2,16" -> [1, 2, 16]; every value >= 1."""
    try:
        out = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: expected integers, e.g. 1,16,128") from None
    if min(out) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: values must be >= 1")
    return out


def parse_sparsities(text: str) -> list[float]:
    """"0.5,0.8" or "50,80" or "50%,80%" -> [0.5, 0.8]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            v = float(item.rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad sparsity {item!r}") from None
        if item.endswith("%") or v > 1:
            v /= 100
        if not 0 <= v < 1:
            raise argparse.ArgumentTypeError(f"bad sparsity {item!r}: expected a fraction in [0, 1) or a percentage")
        out.append(round(v, 6))
    return out


class Grid:
    """The cells to measure: shapes x sparsities x threads x batches, both block shapes in each row."""

    def __init__(self, name: str, shapes, batches, sparsities, blocks, threads,
                 scaling_shapes=None, scaling_batches=None) -> None:
        self.name = name
        self.shapes, self.batches, self.sparsities = list(shapes), list(batches), list(sparsities)
        self.blocks, self.threads = list(blocks), list(threads)
        # Where rows with more than 1 thread run; None: everywhere.
        self.scaling_shapes = scaling_shapes
        self.scaling_batches = scaling_batches

    def runs(self, threads: int, shape: tuple[int, int], m: int) -> bool:
        if threads == 1:
            return True
        return ((self.scaling_shapes is None or tuple(shape) in self.scaling_shapes)
                and (self.scaling_batches is None or m in self.scaling_batches))

    def cells(self) -> list[tuple[tuple[int, int], float, int, int]]:
        """(shape, sparsity, threads, M) of every row (each row holds every block shape)."""
        return [(shape, s, t, m) for shape in self.shapes for s in self.sparsities
                for t in self.threads for m in self.batches if self.runs(t, shape, m)]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "shapes": [f"{n}x{k}" for n, k in self.shapes],
            "batches": self.batches,
            "sparsities": self.sparsities,
            "blocks": [f"{a}x{b}" for a, b in self.blocks],
            "threads": self.threads,
            "scaling_shapes": None if self.scaling_shapes is None else [f"{n}x{k}" for n, k in self.scaling_shapes],
            "scaling_batches": self.scaling_batches,
        }


def make_grid(args: argparse.Namespace) -> Grid:
    """The grid the flags select, narrowed (or replaced) by --shapes/--batches/--sparsities/--blocks/--threads."""
    if getattr(args, "llm", False):
        name = "llm"
        shapes = [(4096, 4096), (3072, 768)] if args.quick else LLM_SHAPES
        batches = [1, 8, 128] if args.quick else LLM_BATCHES
        sparsities = [0.8, 0.9] if args.quick else LLM_SPARSITIES
        scaling_shapes = None if args.shapes else LLM_SCALING_SHAPES
        scaling_batches = None if args.batches else LLM_SCALING_BATCHES
    else:
        name = "default"
        shapes = SHAPES[:1] if args.quick else SHAPES
        batches = [1, 128] if args.quick else BATCHES
        sparsities = [0.5, 0.8, 0.9] if args.quick else SPARSITIES
        scaling_shapes = scaling_batches = None
    return Grid(name, args.shapes or shapes, args.batches or batches, args.sparsities or sparsities,
                args.blocks or BLOCKS, args.threads or THREADS, scaling_shapes, scaling_batches)


# ---------------------------------------------------------------------------
# Dense int8 engines
# ---------------------------------------------------------------------------

_PROBE = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import torch
engine, mode = sys.argv[1], sys.argv[2]
torch.backends.quantized.engine = engine
g = torch.Generator().manual_seed(0)
n, k = 64, 256
w = torch._make_per_channel_quantized_tensor(
    torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g),
    torch.rand(n, dtype=torch.double, generator=g) * 0.01 + 0.001, torch.zeros(n, dtype=torch.long), 0)
# One packed weight per op, as the benchmark does (torch 2.13's onednn linear_dynamic
# crashes on a packed weight that linear has used).
packed = {op: torch.ops.quantized.linear_prepack(w, torch.randn(n, generator=g)) for op in ("static", "dynamic")}
for m in (1, 3, 16, 128):
    x = torch.randn(m, k, generator=g)
    for op in (("static", "dynamic") if mode == "both" else (mode,)) * 2:
        if op == "static":
            y = torch.ops.quantized.linear(torch.quantize_per_tensor(x, 0.05, 128, torch.quint8), packed[op], 0.1, 128)
        else:
            y = torch.ops.quantized.linear_dynamic(x, packed[op], False)
        assert tuple(y.shape) == (m, n), y.shape
print("probe-ok")
"""


def probe_failure(returncode: int, stdout: str, stderr: str) -> str | None:
    """None if a probe child ran through, else why not, e.g. "SIGSEGV in a child process"."""
    if returncode == 0 and "probe-ok" in stdout:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{name} in a child process"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"exit code {returncode} in a child process: {lines[-1] if lines else 'no message'}"


def probe_engines(engines: list[str], timeout: float = 300) -> dict[tuple[str, str], str | None]:
    """Runs each engine's dense static op, dynamic op, and both in turns, on a small layer
    at a few batch sizes, each in a child process (all children at once);
    (engine, "static" | "dynamic" | "both") -> None if it runs, else the reason."""
    procs = {
        (e, mode): subprocess.Popen([sys.executable, "-c", _PROBE, e, mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        for e in engines for mode in ("static", "dynamic", "both")
    }
    out = {}
    for key, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            out[key] = probe_failure(proc.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out[key] = f"no answer within {timeout:.0f} s in a child process"
    return out


def probe_verdicts(probes: dict[tuple[str, str], str | None]) -> dict[str, dict[str, str]]:
    """engine -> {mode: reason} of the ops to skip, from probe_engines' answers: a mode
    whose own probe failed; dynamic if only the probe of both ops in turns failed."""
    out: dict[str, dict[str, str]] = {}
    for e in dict.fromkeys(e for e, _ in probes):
        failures = {mode: probes[(e, mode)] for mode in ("static", "dynamic") if probes.get((e, mode))}
        if not failures and probes.get((e, "both")):
            failures["dynamic"] = f"{probes[(e, 'both')]}, run in turns with the static op (each alone runs)"
        if failures:
            out[e] = failures
    return out


def engine_plan(supported: list[str], default: str) -> tuple[str, str, list[str], dict[str, str]]:
    """(baseline engine, its label, engines to time with the baseline first, aliases).

    torch's `x86` engine runs fbgemm for linear, so where fbgemm is there too, x86 is
    timed as fbgemm and labelled "default (x86 → fbgemm)"."""
    supported = [e for e in supported if e != "none"]
    aliases = {}
    if "x86" in supported and "fbgemm" in supported:
        aliases["x86"] = "fbgemm"
    baseline = aliases.get(default, default)
    label = f"default ({default} → {baseline})" if baseline != default else f"default ({default})"
    engines = [baseline] + [e for e in supported if e != baseline and e not in aliases]
    return baseline, label, engines, aliases


def best_engine(times: dict[str, float | None]) -> tuple[str | None, float | None]:
    """The fastest engine of {engine: ms or None} and its time; (None, None) if none ran."""
    ran = [(t, e) for e, t in times.items() if t is not None]
    if not ran:
        return None, None
    t, e = min(ran)
    return e, t


class Engines:
    """The dense int8 engines this machine runs, probed once in child processes."""

    def __init__(self, probe: bool = True) -> None:
        self.default = TORCH_DEFAULT_ENGINE
        self.baseline, self.label, self.engines, self.aliases = engine_plan(
            list(torch.backends.quantized.supported_engines), self.default)
        self.skipped: dict[str, str] = {}  # "engine mode" -> reason
        if probe:
            for e, failures in probe_verdicts(probe_engines(self.engines)).items():
                for mode, reason in failures.items():
                    self.skip(e, mode, reason)

    def runs(self, engine: str, mode: str) -> bool:
        return f"{engine} {mode}" not in self.skipped

    def skip(self, engine: str, mode: str, reason: str) -> None:
        if self.runs(engine, mode):
            self.skipped[f"{engine} {mode}"] = reason
            print(f"dense int8 {engine} {mode}: skipped ({reason})", file=sys.stderr, flush=True)

    def prepack(self, ws: list[torch.Tensor], bias: torch.Tensor) -> dict[tuple[str, str], list]:
        """(engine, mode) -> torch's dense packed weights (one per weight of `ws`),
        prepacked under that engine, one per op (torch 2.13's onednn linear_dynamic
        crashes on a packed weight that linear has used), for the ops that run."""
        out = {}
        prev = torch.backends.quantized.engine
        try:
            for e in self.engines:
                for mode in ("static", "dynamic"):
                    if not self.runs(e, mode):
                        continue
                    try:
                        torch.backends.quantized.engine = e
                        out[(e, mode)] = [torch.ops.quantized.linear_prepack(w, bias) for w in ws]
                    except RuntimeError as err:
                        self.skip(e, mode, f"linear_prepack: {str(err).splitlines()[0]}")
        finally:
            torch.backends.quantized.engine = prev
        return out

    def as_dict(self) -> dict:
        return {
            "torch_default": self.default,
            "baseline": self.baseline,
            "baseline_label": self.label,
            "timed": self.engines,
            "aliases": self.aliases,
            "skipped": self.skipped,
        }


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

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

    def time_in_turns(self, fns: dict[str, Callable[[], object]], engine: str,
                      engines: dict[str, str] | None = None) -> dict[str, float]:
        """Median ms of each contender, their samples taken in turns; contender `name`
        runs under quantized engine engines[name], the others under `engine`."""
        prev = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = engine
            times = median_seconds_interleaved(fns, self.min_time, self.samples,
                                               {name: (engines or {}).get(name, engine) for name in fns})
            return {name: t * 1e3 for name, t in times.items()}
        finally:
            torch.backends.quantized.engine = prev


def run(args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(0)
    bench = Bench(args.min_time, args.samples)
    grid = make_grid(args)
    prev_threads = torch.get_num_threads()
    engines = Engines(probe=not args.overhead_only)
    rows = []
    layers = range(args.layers)
    for n, k in [] if args.overhead_only else grid.shapes:
        cells = [c for c in grid.cells() if c[0] == (n, k)]
        if not cells:
            continue
        # Every contender gets args.layers weights of the shape and cycles through
        # them, one per call (see --layers).
        bias = torch.randn(n, generator=g)
        w_float = [torch.randn(n, k, generator=g) for _ in layers]
        w_bf16, bias_bf16 = [w.bfloat16() for w in w_float], bias.bfloat16()
        dense_packed = engines.prepack([
            torch._make_per_channel_quantized_tensor(
                torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g),
                torch.rand(n, dtype=torch.double, generator=g) * 0.01 + 0.001,
                torch.zeros(n, dtype=torch.long),
                0,
            )
            for _ in layers
        ], bias)
        for sparsity in grid.sparsities:
            weights = {block: [block_sparse_weight(n, k, block, sparsity, g) for _ in layers] for block in grid.blocks}
            packed = {block: [OPS.qlinear_prepack(w, bias, *block) for w in ws] for block, ws in weights.items()}
            for shape, s, threads, m in cells:
                if s != sparsity:
                    continue
                torch.set_num_threads(threads)
                x = torch.randn(m, k, generator=g)
                xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
                xb = x.bfloat16()
                # Ours (every block shape), dense int8 under every engine and fp32 / bf16,
                # sampled in turns, so that the load of a shared machine hits every side
                # of each speedup, and both block shapes of the 8x1 / 1x4 ratio, alike.
                contenders, contender_engines = dense_contenders(engines, dense_packed, x, xq, threads)
                contenders["fp32_ms"] = in_turn([lambda w=w: F.linear(x, w, bias) for w in w_float])
                contenders["bf16_ms"] = in_turn([lambda w=w: F.linear(xb, w, bias_bf16) for w in w_bf16])
                for block, ours in packed.items():
                    contenders.update(ours_contenders(block, ours, x, xq, threads))
                times = bench.time_in_turns(contenders, engines.baseline, contender_engines)
                base = {"threads": threads, "out": n, "in": k, "M": m, "grid": grid.name,
                        "fp32_ms": times["fp32_ms"], "bf16_ms": times["bf16_ms"]}
                base.update(dense_columns(engines, times))
                for block, ws in weights.items():
                    ours = packed[block][0]
                    name = f"{block[0]}x{block[1]}"
                    row = dict(base, sparsity=sparsity, block=name, kernel=ours.kernel(), layers=args.layers)
                    row.update({key.split("/")[1]: t for key, t in times.items() if key.startswith(name + "/")})
                    row.update(speedups(row))
                    row["torch_sparse_static_ms"] = None
                    row["torch_sparse_dynamic_ms"] = None
                    if not args.no_torch_sparse:
                        row.update(torch_sparse_times(bench, ws, bias, block, x, xq))
                    nnz = int(ws[0].int_repr().ne(0).sum())
                    row["packed_bytes"] = int(ours.packed_bytes())
                    row["packed_budget_bytes"] = int(1.5 * nnz + 8 * n)
                    rows.append(row)
                    print(_progress(row), file=sys.stderr, flush=True)
            del weights, packed
    torch.set_num_threads(prev_threads)
    overhead = overhead_row(bench, g)
    info = tsb.info()
    return {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "kernel": info["active_kernel"],
        "rows": rows,
        "overhead": overhead,
        "grid": grid.as_dict(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_flags": cpu_flags(),
        "cores": cpu_cores(),
        "logical_cpus": os.cpu_count(),
        "kernel_info": info,
        "engines": engines.as_dict(),
        "argv": sys.argv[1:],
        "min_time": args.min_time,
        "samples": args.samples,
        "layers": args.layers,
    }


def dense_contenders(engines: Engines, dense_packed: dict, x: torch.Tensor, xq: torch.Tensor,
                     threads: int) -> tuple[dict, dict]:
    """torch's dense int8 static and dynamic op under each engine, keyed "dense/<engine>/<mode>",
    and the engine each runs under; an op that raises here is skipped from then on."""
    fns, under = {}, {}
    prev = torch.backends.quantized.engine
    try:
        for (e, mode), ps in dense_packed.items():
            if mode == "static":
                fn = in_turn([lambda p=p: torch.ops.quantized.linear(xq, p, 0.1, 128) for p in ps])
            else:
                fn = in_turn([lambda p=p: torch.ops.quantized.linear_dynamic(x, p, False) for p in ps])
            if engines.runs(e, mode):
                try:
                    torch.backends.quantized.engine = e
                    fn()
                    fns[f"dense/{e}/{mode}"], under[f"dense/{e}/{mode}"] = fn, e
                except RuntimeError as err:
                    engines.skip(e, mode, f"{mode} op, M={x.shape[0]}: {str(err).splitlines()[0]}")
        b = engines.baseline
        if threads > 1 and f"dense/{b}/static" in fns:
            # Thread scaling from samples taken in turns with the multi-threaded ones,
            # not from the 1-thread rows measured minutes earlier.
            fns["dense_static_1thread_ms"] = on_one_thread(fns[f"dense/{b}/static"], threads)
            under["dense_static_1thread_ms"] = b
    finally:
        torch.backends.quantized.engine = prev
    return fns, under


def dense_columns(engines: Engines, times: dict) -> dict:
    """Row columns of the dense int8 contenders: per engine, the baseline under the
    original keys (dense_static_ms, ...) and the fastest engine."""
    out: dict = {}
    for mode in ("static", "dynamic"):
        per = {e: times.get(f"dense/{e}/{mode}") for e in engines.engines}
        out[f"dense_int8_{mode}_ms"] = per
        out[f"dense_{mode}_ms"] = per.get(engines.baseline)
        e, t = best_engine(per)
        out[f"best_dense_{mode}_engine"] = e
        out[f"best_dense_{mode}_ms"] = t
    if "dense_static_1thread_ms" in times:
        out["dense_static_1thread_ms"] = times["dense_static_1thread_ms"]
    return out


def speedups(row: dict) -> dict:
    """Dense int8 time / ours, against torch's default engine and the row's fastest engine."""
    out = {}
    for mode in ("static", "dynamic"):
        ours = row.get(f"ours_{mode}_ms")
        out[f"speedup_{mode}_vs_default"] = _ratio(row.get(f"dense_{mode}_ms"), ours)
        out[f"speedup_{mode}_vs_best"] = _ratio(row.get(f"best_dense_{mode}_ms"), ours)
    return out


def ours_contenders(block: tuple[int, int], ours: list, x: torch.Tensor, xq: torch.Tensor, threads: int) -> dict:
    """Our static and dynamic calls on the packed weights (one per layer, in turn),
    keyed "<block>/<JSON key>"."""
    name = f"{block[0]}x{block[1]}"
    static = in_turn([lambda p=p: TSBF.qlinear(xq, p, 0.1, 128) for p in ours])
    out = {
        f"{name}/ours_static_ms": static,
        f"{name}/ours_dynamic_ms": in_turn([lambda p=p: TSBF.qlinear_dynamic(x, p) for p in ours]),
    }
    if threads > 1:
        out[f"{name}/ours_static_1thread_ms"] = on_one_thread(
            in_turn([lambda p=p: TSBF.qlinear(xq, p, 0.1, 128) for p in ours]), threads)
    return out


def in_turn(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """One call of `calls` per call, in turn: a contender with one weight per layer."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)
    return lambda: next(turn)()


def torch_sparse_times(bench: Bench, ws: list[torch.Tensor], bias: torch.Tensor, block: tuple[int, int],
                       x: torch.Tensor, xq: torch.Tensor) -> dict:
    """torch's own sparse ops on the same weights (one per layer, in turn): static under
    fbgemm, dynamic under qnnpack; None where torch has no such op for the block shape."""
    out = {}
    prev = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "fbgemm"
        ts = [torch.ops.sparse.qlinear_prepack(w, bias, *block) for w in ws]
        out["torch_sparse_static_ms"] = bench.time(
            in_turn([lambda p=p: torch.ops.sparse.qlinear(xq, p, 0.1, 128) for p in ts]), "fbgemm")
    except RuntimeError:
        pass
    try:
        torch.backends.quantized.engine = "qnnpack"
        td = [torch.ops.sparse.qlinear_prepack(w, bias, *block) for w in ws]
        out["torch_sparse_dynamic_ms"] = bench.time(
            in_turn([lambda p=p: torch.ops.sparse.qlinear_dynamic(x, p) for p in td]), "qnnpack")
    except RuntimeError:
        pass
    torch.backends.quantized.engine = prev
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


def median_seconds_interleaved(fns: dict[str, Callable[[], object]], min_time: float, samples: int,
                               engines: dict[str, str] | None = None) -> dict:
    """`median_seconds` for several contenders, their samples taken in turns, so that
    load changes on a shared machine hit all of them alike. engines[name], if given, is
    the quantized engine set before each of that contender's loops (outside the timing)."""
    engines = engines or {}

    def select(name: str) -> None:
        if name in engines and torch.backends.quantized.engine != engines[name]:
            torch.backends.quantized.engine = engines[name]

    iters = {}
    for name, fn in fns.items():
        select(name)
        fn()
        t0 = time.perf_counter()
        fn()
        iters[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            select(name)
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
    def x(v):
        return "n/a" if v is None else f"{v:.2f}x"

    return (f"threads={r['threads']} {r['out']}x{r['in']} M={r['M']} {r['block']} {r['sparsity']:.0%}: "
            f"static {x(r['speedup_static_vs_default'])} vs default dense int8, "
            f"{x(r['speedup_static_vs_best'])} vs best ({r['best_dense_static_engine']}); "
            f"dynamic {x(r['speedup_dynamic_vs_default'])}, {x(r['speedup_dynamic_vs_best'])} "
            f"({r['best_dense_dynamic_engine']})")


def _fmt(v: float | None, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:.3f}{suffix}" if not suffix else f"{v:.2f}{suffix}"


def _engine_info(result: dict) -> dict:
    """result["engines"], or what a result of the script before per-engine timing implies."""
    return result.get("engines") or {"baseline": "fbgemm", "baseline_label": "fbgemm", "timed": ["fbgemm"],
                                     "aliases": {}, "skipped": {}}


def _dense_columns(result: dict, mode: str) -> list[str]:
    """Engines with a `mode` time in at least one row, the baseline first."""
    info = _engine_info(result)
    return [e for e in info["timed"]
            if any((r.get(f"dense_int8_{mode}_ms") or {}).get(e) is not None for r in result["rows"])]


def _best_cell(r: dict, mode: str) -> str:
    t = r.get(f"best_dense_{mode}_ms", r.get(f"dense_{mode}_ms"))
    e = r.get(f"best_dense_{mode}_engine")
    return _fmt(t) + (f" {e}" if e and t is not None else "")


def markdown(result: dict) -> str:
    info = _engine_info(result)
    base, label = info["baseline"], info["baseline_label"]
    skipped = "; ".join(f"{k}: {v}" for k, v in info["skipped"].items())
    lines = [
        f"CPU: {result['cpu']} ({result['machine']}), torch {result['torch']}, kernel `{result['kernel']}`; "
        f"times are medians in ms; speedups are dense-int8 time / ours, vs torch's {label} engine "
        f"and vs the row's fastest dense int8 engine (best)."
        + (f" Every contender cycles through {result['layers']} weights per row, one per call."
           if result.get("layers", 1) > 1 else "")
        + (f" Dense int8 not timed: {skipped}." if skipped else ""),
        "",
    ]
    rows = result["rows"]
    sparse = any(r.get("torch_sparse_static_ms") or r.get("torch_sparse_dynamic_ms") for r in rows)

    def head(e: str, mode: str) -> str:
        return f"{label} {mode}" if e == base else f"{e} {mode}"

    cols = {mode: _dense_columns(result, mode) for mode in ("static", "dynamic")}
    if rows:
        header = ["threads", "out x in", "M", "block", "sparsity"]
        for mode in ("static", "dynamic"):
            header += [f"ours {mode}"] + [head(e, mode) for e in cols[mode]]
            header += ["speedup (vs default)", f"best dense {mode}", "vs best"]
            if sparse:
                header += [f"torch sparse {mode}", "vs torch"]
        header += ["fp32", "bf16"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["threads"]), f"{r['out']}x{r['in']}", str(r["M"]), r["block"], f"{r['sparsity']:.0%}"]
        for mode in ("static", "dynamic"):
            ours = r[f"ours_{mode}_ms"]
            per = r.get(f"dense_int8_{mode}_ms") or {base: r.get(f"dense_{mode}_ms")}
            cells += [_fmt(ours)] + [_fmt(per.get(e)) for e in cols[mode]]
            cells += [_fmt(_ratio(r.get(f"dense_{mode}_ms"), ours), "x"), _best_cell(r, mode),
                      _fmt(_ratio(r.get(f"best_dense_{mode}_ms"), ours), "x")]
            if sparse:
                cells += [_fmt(r.get(f"torch_sparse_{mode}_ms")), _fmt(_ratio(r.get(f"torch_sparse_{mode}_ms"), ours), "x")]
        cells += [_fmt(r.get("fp32_ms")), _fmt(r.get("bf16_ms"))]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines.append("")
        lines += [summary_markdown(result), ""]
    scaling = [r for r in rows if r.get("ours_static_1thread_ms")]
    if scaling:
        lines += [
            "Thread scaling, static: 1-thread time / multi-thread time, both sampled in turns in the same row.",
            "",
            f"| threads | out x in | M | block | sparsity | ours | dense int8 ({label}) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['threads']} | {r['out']}x{r['in']} | {r['M']} | {r['block']} | {r['sparsity']:.0%} "
            f"| {_fmt(_ratio(r['ours_static_1thread_ms'], r['ours_static_ms']), 'x')} "
            f"| {_fmt(_ratio(r.get('dense_static_1thread_ms'), r.get('dense_static_ms')), 'x')} |"
            for r in scaling
        ]
        lines.append("")
    lines.append(overhead_markdown(result["overhead"]))
    return "\n".join(lines)


def summary_markdown(result: dict) -> str:
    """Static speedups, 1 thread, one line per (shape, block, sparsity), one column per M:
    "vs default / vs best", plus the best engine where it is not the default's."""
    info = _engine_info(result)
    rows = [r for r in result["rows"] if r["threads"] == 1]
    ms = sorted({r["M"] for r in rows})
    cells: dict[tuple, dict[int, str]] = {}
    for r in rows:
        key = (r["out"], r["in"], r["block"], r["sparsity"])
        ours = r["ours_static_ms"]
        text = (f"{_fmt(_ratio(r.get('dense_static_ms'), ours), 'x')} / "
                f"{_fmt(_ratio(r.get('best_dense_static_ms', r.get('dense_static_ms')), ours), 'x')}")
        e = r.get("best_dense_static_engine")
        if e and e != info["baseline"]:
            text += f" {e}"
        cells.setdefault(key, {})[r["M"]] = text
    lines = [
        f"Summary, static, 1 thread: speedup vs torch's {info['baseline_label']} dense int8 / "
        "vs the fastest dense int8 engine (named where it is another engine).",
        "",
        "| out x in | block | sparsity | " + " | ".join(f"M={m}" for m in ms) + " |",
        "|" + "---|" * (3 + len(ms)),
    ]
    for (n, k, block, s), by_m in cells.items():
        lines.append(f"| {n}x{k} | {block} | {s:.0%} | " + " | ".join(by_m.get(m, "") for m in ms) + " |")
    return "\n".join(lines)


def targets(result: dict) -> str:
    """Checks the performance targets of the project against this run."""
    rows = result["rows"]
    one = [r for r in rows if r["threads"] == 1]
    out = []

    def speedups(pred, mode):
        key = f"ours_{mode}_ms"
        return [r[f"dense_{mode}_ms"] / r[key] for r in one if pred(r) and r.get(f"dense_{mode}_ms") is not None]

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
    two = [r for r in rows if r["threads"] == 2 and r["M"] == 128 and r.get("ours_static_1thread_ms")
           and r.get("dense_static_1thread_ms")]
    if two:
        scal = [r["ours_static_1thread_ms"] / r["ours_static_ms"] for r in two]
        dense = [r["dense_static_1thread_ms"] / r["dense_static_ms"] for r in two]
        out.append(_check("2 threads vs 1 at M=128 (static): min speedup >= 1.7x", min(scal), 1.7)
                   + f" (median {statistics.median(scal):.2f}; dense int8 on the same samples: "
                   f"min {min(dense):.2f}, median {statistics.median(dense):.2f})")
    if rows:
        size = max(r["packed_bytes"] / r["packed_budget_bytes"] for r in rows)
        out.append(_check_at_most("packed bytes / (1.5 x nonzero bytes + 8 x out_features) <= 1", size, 1.0))
    out += issue16_targets(rows, _engine_info(result)["baseline"])
    return "\n".join(out)


# Issue 16's targets on the LLM grid: (batches, sparsity, minimum speedup over fbgemm dense int8).
ISSUE16_TARGETS = [
    ((1, 2, 4, 8), 0.8, 3.0),
    ((1, 2, 4, 8), 0.9, 5.0),
    ((16, 128), 0.8, 3.5),
    ((16, 128), 0.9, 6.0),
    (None, 0.5, 1.0),
]
ISSUE16_SCALING = ((11008, 4096), (1, 128), 1.7)  # shape, batches, minimum 2-thread / 1-thread speedup


def issue16_targets(rows: list[dict], baseline: str = "fbgemm") -> list[str]:
    """Issue 16's targets, from the LLM grid's rows (none if the run has none): the
    minimum over every measured shape and both block shapes, with the worst cell."""
    llm = [r for r in rows if r.get("grid") == "llm"]
    if not llm:
        return []
    out = [f"- Issue 16 (LLM grid; vs {baseline} dense int8, 1x4 and 8x1, every measured shape, 1 thread):"]
    one = [r for r in llm if r["threads"] == 1 and r["block"] in ("1x4", "8x1")]
    for batches, sparsity, need in ISSUE16_TARGETS:
        for mode in ("static", "dynamic"):
            key = f"speedup_{mode}_vs_default"
            sel = [r for r in one if r["sparsity"] == sparsity and r.get(key) is not None
                   and (batches is None or r["M"] in batches)]
            if not sel:
                continue
            worst = min(sel, key=lambda r: r[key])
            where = "every M" if batches is None else "M in {" + ", ".join(map(str, batches)) + "}"
            text = (f"{sparsity:.0%} {mode}, {where}: min speedup >= {need}x"
                    if need > 1 else f"{sparsity:.0%} {mode}, {where}: never slower")
            vs_best = [r[f"speedup_{mode}_vs_best"] for r in sel if r.get(f"speedup_{mode}_vs_best") is not None]
            out.append("  " + _check(text, worst[key], need)
                       + f" (worst {worst['out']}x{worst['in']} M={worst['M']} {worst['block']}; {len(sel)} rows"
                       + (f"; vs best dense int8: min {min(vs_best):.2f}" if vs_best else "") + ")")
    shape, batches, need = ISSUE16_SCALING
    for m in batches:
        two = [r for r in llm if r["threads"] == 2 and (r["out"], r["in"]) == shape and r["M"] == m
               and r.get("ours_static_1thread_ms")]
        if not two:
            continue
        scal = [r["ours_static_1thread_ms"] / r["ours_static_ms"] for r in two]
        dense = [_ratio(r.get("dense_static_1thread_ms"), r.get("dense_static_ms")) for r in two]
        dense = [d for d in dense if d is not None]
        out.append("  " + _check(f"2 threads vs 1, {shape[0]}x{shape[1]} M={m} (static): min speedup >= {need}x",
                                 min(scal), need)
                   + f" (median {statistics.median(scal):.2f} over {len(two)} rows"
                   + (f"; dense int8 on the same samples: median {statistics.median(dense):.2f}" if dense else "")
                   + ")")
    return out


def _check(text: str, value: float, minimum: float) -> str:
    return f"- [{'x' if value >= minimum else ' '}] {text}: measured {value:.2f}"


def _check_at_most(text: str, value: float, maximum: float) -> str:
    return f"- [{'x' if value <= maximum else ' '}] {text}: measured {value:.2f}"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def plot(result: dict, path: str) -> None:
    if result.get("grid", {}).get("name") == "llm":
        return plot_llm(result, path)
    plt = _pyplot()
    rows = [r for r in result["rows"] if r["threads"] == 1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    cases = [(n, k, m) for (n, k) in sorted({(r["out"], r["in"]) for r in rows})
             for m in sorted({r["M"] for r in rows})]
    colors = plt.get_cmap("tab10")
    for ax, mode in zip(axes, ("static", "dynamic")):
        for i, (n, k, m) in enumerate(cases):  # one color per layer and batch, one line style per block
            for block, style in (("1x4", "-"), ("8x1", "--")):
                pts = sorted((r["sparsity"], r[f"dense_{mode}_ms"] / r[f"ours_{mode}_ms"])
                             for r in rows if (r["out"], r["in"], r["M"], r["block"]) == (n, k, m, block)
                             and r.get(f"dense_{mode}_ms") is not None)
                if pts:
                    ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], style, color=colors(i % 10),
                            marker="o", markersize=3, label=f"{n}x{k} M={m} {block}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{mode}: speedup over dense int8 ({_engine_info(result)['baseline']}), 1 thread")
        ax.set_xlabel("sparsity (%)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("dense int8 time / torch_sparse_backend time")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{result['cpu']}, torch {result['torch']}, kernel {result['kernel']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_llm(result: dict, path: str) -> None:
    """Speedup over the fastest dense int8 engine (log y) against M (log2 x), 1 thread:
    one row of panels per shape, static and dynamic side by side, one line per block x sparsity."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    rows = [r for r in result["rows"] if r["threads"] == 1]
    shapes = list(dict.fromkeys((r["out"], r["in"]) for r in rows))
    if not shapes:
        raise SystemExit("--plot: no 1-thread rows to plot (add 1 to --threads)")
    ms = sorted({r["M"] for r in rows})
    sparsities = sorted({r["sparsity"] for r in rows})
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    colors = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(len(shapes), 2, figsize=(11, 3.2 * len(shapes) + 0.8), squeeze=False, sharey=True)
    for (n, k), panel in zip(shapes, axes):
        for ax, mode in zip(panel, ("static", "dynamic")):
            for bi, block in enumerate(blocks):
                for si, s in enumerate(sparsities):
                    pts = sorted((r["M"], r[f"speedup_{mode}_vs_best"]) for r in rows
                                 if (r["out"], r["in"], r["block"], r["sparsity"]) == (n, k, block, s)
                                 and r.get(f"speedup_{mode}_vs_best") is not None)
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[bi % len(styles)], marker="o",
                                markersize=3, color=colors(si % 10),
                                label=f"{block} {s:.0%}")
            best = sorted({r[f"best_dense_{mode}_engine"] for r in rows if (r["out"], r["in"]) == (n, k)
                           and r.get(f"best_dense_{mode}_engine")})
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_title(f"{n}x{k} (out x in), {mode}; best dense int8: {', '.join(best) or 'n/a'}", fontsize=9)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ms))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(FixedLocator([0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30]))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(True, which="both", alpha=0.3)
        panel[0].set_ylabel("best dense int8 time / ours")
    for ax in axes[-1]:
        ax.set_xlabel("batch rows M")
    axes[0][1].legend(fontsize=7, ncol=2, title="block, sparsity", title_fontsize=7)
    fig.suptitle(f"Speedup over the fastest dense int8 engine of each point, 1 thread\n{result['cpu']}, "
                 f"torch {result['torch']}, kernel {result['kernel']}, {result.get('date', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller grid")
    p.add_argument("--llm", action="store_true",
                   help="the LLM-size grid: 4096x4096, 11008x4096, 4096x11008, 3072x768, 768x3072, "
                        "M 1-128, sparsity 50/80/90%%, threads 1 and 2 (2 only on 11008x4096 and 4096x4096 "
                        "at M 1 and 128)")
    p.add_argument("--shapes", type=parse_shapes, metavar="NxK,...", help="layers, out x in (replaces the grid's)")
    p.add_argument("--batches", type=parse_ints, metavar="M,...", help="batch rows (replaces the grid's)")
    p.add_argument("--sparsities", type=parse_sparsities, metavar="S,...",
                   help="block sparsities, 0.8 or 80%% (replaces the grid's)")
    p.add_argument("--blocks", type=parse_blocks, metavar="RxC,...", help="block shapes (default 1x4,8x1)")
    p.add_argument("--threads", type=parse_ints, metavar="T,...", help="intra-op thread counts (default 1,2)")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG: speedup over dense int8 vs sparsity; with --llm, vs M per shape")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timed sample (default 0.02)")
    p.add_argument("--samples", type=int, default=7, help="timed samples per measurement; the median is kept")
    p.add_argument("--layers", type=int, default=1, metavar="L",
                   help="weights per contender and row, one per call in turn, as a model's layers run "
                        "(default 1: every call repeats one weight, which the caches and branch "
                        "predictors can learn)")
    p.add_argument("--no-torch-sparse", action="store_true",
                   help="skip torch's own (slow) sparse ops (always skipped with --llm)")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the per-call overhead section (M=1, 64x64), not the grid")
    args = p.parse_args(argv)
    if args.overhead_only and args.plot:
        p.error("--plot needs the grid; drop --overhead-only")
    if args.plot:
        _pyplot()  # fail before the measurements, not after
    if args.layers < 1:
        p.error("--layers must be at least 1")
    grid = make_grid(args)
    for n, k in grid.shapes:
        for rb, cb in grid.blocks:
            if n % rb or k % cb:
                p.error(f"shape {n}x{k} is not a whole number of {rb}x{cb} blocks")
    if args.llm:
        args.no_torch_sparse = True  # torch's sparse ops take up to seconds per call on these layers
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

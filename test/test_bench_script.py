"""The pure helpers of scripts/bench.py (grid, parsing, engines, speedups, targets);
no timing here: benchmarks are scripts, never timed tests."""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
_spec = importlib.util.spec_from_file_location("bench_script", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _args(**kw):
    base = dict(llm=False, quick=False, shapes=None, batches=None, sparsities=None, blocks=None, threads=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_parse_lists():
    assert bench.parse_shapes("4096x4096, 11008X4096") == [(4096, 4096), (11008, 4096)]
    assert bench.parse_blocks("1x4,8x1") == [(1, 4), (8, 1)]
    assert bench.parse_ints("1,2,128") == [1, 2, 128]
    assert bench.parse_sparsities("0.5,0.8") == [0.5, 0.8]
    assert bench.parse_sparsities("80,90%") == [0.8, 0.9]
    for fn, bad in ((bench.parse_shapes, "4096"), (bench.parse_shapes, "ax4"), (bench.parse_ints, "0"),
                    (bench.parse_ints, "1,x"), (bench.parse_sparsities, "100"), (bench.parse_blocks, "0x4")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


def test_cpu_flags():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_int8\n\nflags\t: sse\n"
    flags = bench.cpu_flags(text)
    assert {f for f, on in flags.items() if on} == {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"}
    assert flags["avx_vnni"] is False and flags["amx_bf16"] is False
    assert bench.cpu_flags("Features\t: fp asimd asimddp i8mm\n")["i8mm"] is True
    assert not any(bench.cpu_flags("").values())


def test_llm_grid_and_thread_rows():
    grid = bench.make_grid(_args(llm=True))
    cells = grid.cells()
    one = [c for c in cells if c[2] == 1]
    two = [c for c in cells if c[2] == 2]
    assert len(one) == 5 * 7 * 3
    # 2 threads only on 11008x4096 and 4096x4096 at M 1 and 128, every sparsity
    assert len(two) == 2 * 2 * 3
    assert {(c[0], c[3]) for c in two} == {((11008, 4096), 1), ((11008, 4096), 128),
                                          ((4096, 4096), 1), ((4096, 4096), 128)}
    assert grid.blocks == [(1, 4), (8, 1)]
    # an explicit --shapes / --batches is measured at every thread count given
    grid = bench.make_grid(_args(llm=True, shapes=[(3072, 768)], batches=[16], threads=[2], sparsities=[0.8]))
    assert grid.cells() == [((3072, 768), 0.8, 2, 16)]
    grid = bench.make_grid(_args(llm=True, batches=[2], threads=[2]))
    # --batches given, --shapes not: M=2 runs with 2 threads, on the scaling shapes only
    assert grid.cells() == [((n, k), s, 2, 2) for n, k in ((4096, 4096), (11008, 4096)) for s in (0.5, 0.8, 0.9)]
    grid = bench.make_grid(_args(llm=True, shapes=[(11008, 4096)], threads=[1, 2], sparsities=[0.9]))
    assert [(c[2], c[3]) for c in grid.cells()] == [(1, m) for m in bench.LLM_BATCHES] + [(2, 1), (2, 128)]


def test_default_grids_unchanged():
    quick = bench.make_grid(_args(quick=True)).cells()
    assert len(quick) == 1 * 3 * 2 * 2 and {c[0] for c in quick} == {(768, 768)}
    full = bench.make_grid(_args()).cells()
    assert len(full) == 3 * 5 * 2 * 3
    narrowed = bench.make_grid(_args(quick=True, batches=[1], threads=[1])).cells()
    assert narrowed == [((768, 768), s, 1, 1) for s in (0.5, 0.8, 0.9)]


def test_engine_plan():
    base, label, engines, aliases = bench.engine_plan(["qnnpack", "onednn", "x86", "fbgemm"], "x86")
    assert (base, label, engines, aliases) == ("fbgemm", "default (x86 → fbgemm)", ["fbgemm", "qnnpack", "onednn"],
                                               {"x86": "fbgemm"})
    assert bench.engine_plan(["qnnpack", "none"], "qnnpack") == ("qnnpack", "default (qnnpack)", ["qnnpack"], {})
    assert bench.engine_plan(["x86", "onednn"], "x86")[:3] == ("x86", "default (x86)", ["x86", "onednn"])


def test_best_engine_and_speedups():
    assert bench.best_engine({"fbgemm": 2.0, "onednn": 1.5, "qnnpack": None}) == ("onednn", 1.5)
    assert bench.best_engine({"onednn": None}) == (None, None)
    row = {"ours_static_ms": 0.5, "dense_static_ms": 2.0, "best_dense_static_ms": 1.0,
           "ours_dynamic_ms": 1.0, "dense_dynamic_ms": 3.0, "best_dense_dynamic_ms": None}
    assert bench.speedups(row) == {"speedup_static_vs_default": 4.0, "speedup_static_vs_best": 2.0,
                                   "speedup_dynamic_vs_default": 3.0, "speedup_dynamic_vs_best": None}


def test_probe_failure_and_verdicts():
    assert bench.probe_failure(0, "probe-ok\n", "") is None
    assert bench.probe_failure(-11, "", "") == "SIGSEGV in a child process"
    assert bench.probe_failure(0, "", "") == "exit code 0 in a child process: no message"
    msg = bench.probe_failure(1, "", "Traceback (most recent call last):\n  ...\nRuntimeError: no engine\n")
    assert msg == "exit code 1 in a child process: RuntimeError: no engine"
    probes = {("fbgemm", "static"): None, ("fbgemm", "dynamic"): None, ("fbgemm", "both"): None,
              ("onednn", "static"): None, ("onednn", "dynamic"): "SIGSEGV in a child process",
              ("onednn", "both"): "SIGSEGV in a child process",
              ("qnnpack", "static"): None, ("qnnpack", "dynamic"): None, ("qnnpack", "both"): "SIGABRT in a child process"}
    assert bench.probe_verdicts(probes) == {
        "onednn": {"dynamic": "SIGSEGV in a child process"},
        "qnnpack": {"dynamic": "SIGABRT in a child process, run in turns with the static op (each alone runs)"},
    }


def test_probe_child_runs():
    # the child's code itself, on the dense engine every build of torch has on this
    # architecture: fbgemm on x86 (each op alone and both in turns), qnnpack elsewhere
    if "fbgemm" in torch.backends.quantized.supported_engines:
        assert bench.probe_engines(["fbgemm"]) == {("fbgemm", "static"): None, ("fbgemm", "dynamic"): None,
                                                   ("fbgemm", "both"): None}
    else:
        probes = bench.probe_engines(["qnnpack"])
        assert probes[("qnnpack", "static")] is None and probes[("qnnpack", "dynamic")] is None
    assert bench.probe_engines(["no-such-engine"])[("no-such-engine", "static")].startswith("exit code 1")


def _row(shape, m, block, s, vs_default, vs_best=None, threads=1, **kw):
    r = {"grid": "llm", "threads": threads, "out": shape[0], "in": shape[1], "M": m, "block": block, "sparsity": s,
         "ours_static_ms": 1.0, "ours_dynamic_ms": 1.0, "dense_static_ms": vs_default,
         "best_dense_static_ms": vs_best or vs_default, "best_dense_static_engine": "fbgemm" if not vs_best else "onednn"}
    r.update(speedup_static_vs_default=vs_default, speedup_static_vs_best=vs_best or vs_default,
             speedup_dynamic_vs_default=None, speedup_dynamic_vs_best=None)
    r.update(kw)
    return r


def test_issue16_targets():
    rows = [
        _row((4096, 4096), 1, "1x4", 0.8, 3.2),
        _row((4096, 4096), 8, "8x1", 0.8, 2.9, vs_best=1.5),
        _row((4096, 4096), 16, "1x4", 0.8, 3.6),
        _row((4096, 4096), 32, "1x4", 0.8, 0.1),  # M=32 has no 80% target; counts for nothing but 50%
        _row((4096, 4096), 1, "1x4", 0.5, 1.1),
        _row((11008, 4096), 1, "1x4", 0.9, 5.0, threads=2, ours_static_1thread_ms=1.8,
             dense_static_1thread_ms=3.2, dense_static_ms=2.0),
        _row((11008, 4096), 128, "8x1", 0.9, 5.0, threads=2, ours_static_1thread_ms=1.6),
        dict(_row((768, 768), 1, "1x4", 0.5, 0.5), grid="default"),  # not the LLM grid
    ]
    lines = bench.issue16_targets(rows)
    assert lines[0].startswith("- Issue 16 (LLM grid; vs fbgemm dense int8")
    assert "  - [ ] 80% static, M in {1, 2, 4, 8}: min speedup >= 3.0x: measured 2.90 " \
           "(worst 4096x4096 M=8 8x1; 2 rows; vs best dense int8: min 1.50)" in lines
    assert "  - [x] 80% static, M in {16, 128}: min speedup >= 3.5x: measured 3.60 " \
           "(worst 4096x4096 M=16 1x4; 1 rows; vs best dense int8: min 3.60)" in lines
    assert "  - [x] 50% static, every M: never slower: measured 1.10 " \
           "(worst 4096x4096 M=1 1x4; 1 rows; vs best dense int8: min 1.10)" in lines
    assert "  - [x] 2 threads vs 1, 11008x4096 M=1 (static): min speedup >= 1.7x: measured 1.80 " \
           "(median 1.80 over 1 rows; dense int8 on the same samples: median 1.60)" in lines
    assert "  - [ ] 2 threads vs 1, 11008x4096 M=128 (static): min speedup >= 1.7x: measured 1.60 " \
           "(median 1.60 over 1 rows)" in lines
    assert not any("dynamic" in line for line in lines)  # no dynamic times in these rows
    assert bench.issue16_targets([dict(r, grid="default") for r in rows]) == []


def test_summary_markdown():
    rows = [_row((4096, 4096), 1, "1x4", 0.8, 3.2), _row((4096, 4096), 16, "1x4", 0.8, 4.0, vs_best=2.0),
            _row((4096, 4096), 16, "8x1", 0.8, 3.0), _row((4096, 4096), 1, "1x4", 0.8, 9.9, threads=2)]
    text = bench.summary_markdown({"rows": rows, "engines": {"baseline": "fbgemm", "baseline_label": "default (x86 → fbgemm)"}})
    lines = text.splitlines()
    assert lines[2] == "| out x in | block | sparsity | M=1 | M=16 |"
    assert lines[4] == "| 4096x4096 | 1x4 | 80% | 3.20x / 3.20x | 4.00x / 2.00x onednn |"
    assert lines[5] == "| 4096x4096 | 8x1 | 80% |  | 3.00x / 3.00x |"
    assert len(lines) == 6  # the 2-thread row is not in the summary


def test_in_turn_cycles_through_layers():
    calls = []
    fn = bench.in_turn([lambda i=i: calls.append(i) for i in range(3)])
    for _ in range(7):
        fn()
    assert calls == [0, 1, 2, 0, 1, 2, 0]
    one = lambda: None  # noqa: E731
    assert bench.in_turn([one]) is one

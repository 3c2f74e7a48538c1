"""The command line on a first run, the build's progress report, and the demo's honesty."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

import torch_sparse_backend as tsb
from torch_sparse_backend import _extension, demo

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **env):
    return subprocess.run(
        [sys.executable, "-m", "torch_sparse_backend", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["build", "--help"], ["info", "--help"]])
def test_help_builds_nothing(args, tmp_path):
    out = _run(args, TORCH_SPARSE_BACKEND_CACHE=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m torch_sparse_backend")
    assert "building" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_demo_help_shows_every_default(tmp_path):
    out = _run(["demo", "--help"], TORCH_SPARSE_BACKEND_CACHE=str(tmp_path))
    text = " ".join(out.stdout.split())
    for option, default in (("--sparsity", "0.8"), ("--block", "[1, 4]"), ("--batch", "16"),
                            ("--rounds", "31"), ("--threads", "1"), ("--max-density", "0.5"),
                            ("--flow", "torch.ao"), ("--plot", "None")):
        assert re.search(re.escape(option) + r"\b.*?\(default: " + re.escape(default) + r"\)", text), option


def test_info_without_a_build_says_what_would_be_built(tmp_path):
    out = _run(["info"], TORCH_SPARSE_BACKEND_CACHE=str(tmp_path))
    assert out.returncode == 0, out.stderr
    n_units = len(list(_extension.source_dir().rglob("*.cpp")))
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert lines["built"].startswith(f"no: `python -m torch_sparse_backend build` (or the first import) "
                                     f"compiles {n_units} units, about ")
    assert lines["active_kernel"] == "(known once built)"
    assert lines["build_units"] == str(n_units)
    assert lines["cache_dir"] == str(tmp_path)
    assert lines["library"].startswith(str(tmp_path) + "/")
    assert lines["torch"] == torch.__version__
    assert list(tmp_path.iterdir()) == []  # nothing built


def test_info_with_a_build_reports_the_kernels():
    out = _run(["info"])
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert lines["built"] == "yes"
    info = tsb.info()
    assert info["built"] is True
    assert lines["active_kernel"] == info["active_kernel"]
    assert lines["runnable_kernels"] == ", ".join(info["runnable_kernels"])
    assert lines["library"] == str(_extension.library_path())


def test_bad_demo_arguments_fail_before_building(tmp_path):
    for args, message in (
        (["--sparsity", "1.5"], "--sparsity must be in [0, 1), got 1.5"),
        (["--block", "3", "4"], "--block sizes must be from 1, 2, 4, 8, 16, got 3 4"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--max-density", "-1"], "--max-density must be in [0, 1], got -1.0"),
        (["--flow", "torchao", "--plot", "x.png"], "--plot draws the torch.ao flow"),
        (["--flow", "tf"], "argument --flow: invalid choice: 'tf'"),
    ):
        out = _run(["demo", *args], TORCH_SPARSE_BACKEND_CACHE=str(tmp_path))
        assert out.returncode == 2
        assert message in out.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"batch must be at least 1, got 0"):
        demo.run(batch=0)


def test_build_estimate_grows_with_the_units(monkeypatch):
    monkeypatch.setenv("MAX_JOBS", "2")
    assert _extension.build_jobs(10) == 2
    assert _extension.build_jobs(1) == 1
    low10, high10 = _extension.build_estimate(10)
    low20, high20 = _extension.build_estimate(20)
    assert 0 < low10 < high10 and low20 >= 2 * low10 - 5 and high20 >= 2 * high10 - 5
    monkeypatch.setenv("MAX_JOBS", "1")
    assert _extension.build_estimate(10)[1] >= 2 * high10 - 5


def test_build_reports_units_progress_and_time(tmp_path, monkeypatch, capsys):
    # A stand-in for the ninja run: it writes one object file per source, a few
    # at a time, as ninja does, so the progress thread has something to see, then
    # the two libraries.
    root = tmp_path / "csrc"
    (root / "kernels").mkdir(parents=True)
    for name in ("python_bindings.cpp", "ops.cpp", "kernels/a.cpp", "kernels/b.cpp"):
        (root / name).write_text("// source\n")
    build = tmp_path / "build"

    def fake_ninja(ninja, build_directory, verbose):
        ninja_file = (build_directory / "build.ninja").read_text()
        for source in _extension._sources(root):
            assert f"build {source.stem}.o: compile {source}" in ninja_file
            time.sleep(0.3)
            (build_directory / (source.stem + ".o")).write_bytes(b"")
        time.sleep(0.7)
        (build_directory / "libtorch_sparse_backend_ops.so").write_bytes(b"")
        (build_directory / "torch_sparse_backend_C.so").write_bytes(b"")

    monkeypatch.setattr(_extension, "_run_ninja", fake_ninja)
    monkeypatch.setattr(_extension, "_PROGRESS_INTERVAL", 0.5)
    monkeypatch.setattr(_extension, "_ninja_executable", lambda: "ninja")
    _extension._build(root, build, verbose=False)
    lines = capsys.readouterr().err.splitlines()
    low, high = _extension.build_estimate(4)
    jobs = _extension.build_jobs(4)
    wrapper = next((w for w in ("ccache", "sccache") if shutil.which(w)), None)
    cached = f"; less where {wrapper} holds the objects" if wrapper else ""
    assert lines[0] == (f"torch_sparse_backend: building the C++ kernels, once per source change: 4 units on "
                        f"{jobs} core{'s' if jobs > 1 else ''}, expect {low}-{high} s{cached}; into {build}")
    progress = [re.fullmatch(r"torch_sparse_backend: compiled (\d)/4 units, (\d+) s", line) for line in lines[1:-1]]
    assert progress and all(progress), lines
    counts = [int(m.group(1)) for m in progress]
    assert counts == sorted(counts) and counts[-1] == 4
    assert re.fullmatch(r"torch_sparse_backend: built 4 units in \d+\.\d s", lines[-1])


def test_python_m_imports_the_package_lazily_but_import_registers_the_ops(tmp_path):
    code = ("import sys, torch, torch_sparse_backend as t\n"
            "print(hasattr(torch.ops.torch_sparse_backend, 'qlinear_uint8'), hasattr(t, 'nn'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["True", "True"], out.stderr


def _demo(**kwargs):
    lines = []
    result = demo.run(rounds=2, out=lines.append, **kwargs)
    return result, "\n".join(lines)


def test_demo_compares_like_for_like():
    result, text = _demo()
    assert result["sparse_layers"] == 3
    assert result["scripted_identical"] is True
    assert result["static_max_abs_diff"] == 0.0  # the same calibrated model: bit for bit
    rows = {(r["flow"], r["mode"], r["form"]): r for r in result["models"]}
    assert set(rows) == {(f, m, k) for f in ("eager", "FX") for m in ("static", "dynamic")
                         for k in ("module", "TorchScript")}
    for r in rows.values():
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["ours_ms"])
        assert f"| {r['flow']} | {r['mode']} | {r['form']} | {r['dense_ms']:.3f} | {r['ours_ms']:.3f} | 3 of 3 " \
               f"| {r['speedup']:.2f}x |" in text
    assert len(result["layers"]) == 6
    for layer in result["layers"]:
        assert layer["sparse"] and layer["kernel"] == tsb.info()["active_kernel"]
        assert layer["block"] == (1, 4) and layer["density"] == pytest.approx(0.2, abs=0.01)
        assert f"{layer['name']} {layer['out_features']}x{layer['in_features']} block 1x4" in text
    assert "3 of 3 layers run on torch_sparse_backend's sparse kernels" in text


def test_demo_claims_no_speedup_when_every_layer_falls_back_to_dense():
    result, text = _demo(sparsity=0.4, block=(8, 1))
    assert result["sparse_layers"] == 0
    assert all(r["speedup"] is None and r["sparse_layers"] == 0 for r in result["models"])
    assert all(not layer["sparse"] and layer["ours_ms"] is None and layer["speedup"] is None
               for layer in result["layers"])
    table = [line for line in text.splitlines() if line.startswith(("| eager", "| FX"))]
    assert len(table) == 8
    assert all(line.endswith("| 0 of 3 | none claimed |") for line in table)
    assert not re.search(r"\d\.\d\dx", text)  # no ratio anywhere
    assert text.count("dense fallback, runs torch's dense int8") == 6
    assert "0 of 3 layers run on torch_sparse_backend's sparse kernels" in text


def test_demo_labels_a_partial_fallback(monkeypatch):
    prune = demo._sparsify

    def prune_fc2_less(model, level, block):  # fc2 at 30% sparsity, above max_density
        prune(model, level, block)
        with torch.no_grad():
            model.fc2.weight.copy_(torch.randn_like(model.fc2.weight))
        fc2_only = torch.nn.Module()
        fc2_only.fc2 = model.fc2
        sparsifier = demo.WeightNormSparsifier(sparsity_level=0.3, sparse_block_shape=block)
        sparsifier.prepare(fc2_only, [{"tensor_fqn": "fc2.weight"}])
        sparsifier.step()
        sparsifier.squash_mask(params_to_keep=("sparse_block_shape",))

    monkeypatch.setattr(demo, "_sparsify", prune_fc2_less)
    result, text = _demo()
    assert result["sparse_layers"] == 2
    assert {(r["name"], r["sparse"]) for r in result["layers"]} == {("fc1", True), ("fc2", False), ("fc3", True)}
    assert all(r["sparse_layers"] == 2 and r["speedup"] is not None for r in result["models"])
    assert "fc2: block 1x4 density 0.700, dense fallback: torch's dense int8" in text
    assert "1 of 3 layers are dense fallbacks (torch's dense int8); the speedup comes from the 2 sparse ones." in text


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit, match=r"^--plot needs matplotlib: pip install matplotlib$"):
        demo.main(plot_path="x.png")

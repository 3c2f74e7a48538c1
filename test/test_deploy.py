"""Deployment without Python: the ops library, the C++ example, AOTInductor packages.

The C++ example (examples/cpp) is built with CMake against the installed torch
into a directory under the build cache, keyed by its sources and the torch
installation, and runs the models examples/cpp/export_models.py saves; its
outputs must equal Python's bit for bit.
"""

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_sparse_backend as tsb
from torch_sparse_backend import _extension

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cpp"


def _tool(name):
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (Debian: apt-get install {'binutils' if name != 'cmake' else name})"
    return path


def _export_models():
    spec = importlib.util.spec_from_file_location("export_models", EXAMPLE / "export_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ops_library_has_no_python():
    ops = tsb.ops_library_path()
    assert ops.is_file() and ops.name == "libtorch_sparse_backend_ops.so"
    undefined = subprocess.run([_tool("nm"), "-D", "--undefined-only", str(ops)], capture_output=True,
                               text=True, check=True).stdout
    symbols = [line.split()[-1] for line in undefined.splitlines() if line.strip()]
    assert any(s.startswith("_ZN3c10") for s in symbols)  # it does use c10 (a sanity check of the listing)
    assert [s for s in symbols if re.match(r"_?Py", s)] == []
    dynamic = subprocess.run([_tool("readelf"), "-d", str(ops)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dynamic)
    assert "libc10.so" in needed and "libtorch_cpu.so" in needed
    assert [n for n in needed if "python" in n] == []


def test_python_module_links_the_ops_library_next_to_it():
    module = _extension.library_path()
    assert module.parent == tsb.ops_library_path().parent
    dynamic = subprocess.run([_tool("readelf"), "-d", str(module)], capture_output=True, text=True,
                             check=True).stdout
    assert "Shared library: [libtorch_sparse_backend_ops.so]" in dynamic
    assert re.search(r"\((RUNPATH|RPATH)\)\s+Library r(un)?path: \[\$ORIGIN\]", dynamic)
    assert str(tsb.ops_library_path()) in torch.ops.loaded_libraries


def test_info_shows_the_ops_library():
    out = subprocess.run([sys.executable, "-m", "torch_sparse_backend", "info"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert f"ops_library        {tsb.ops_library_path()}" in out.stdout.splitlines()


@pytest.fixture(scope="module")
def run_model():
    """The example program, built against the installed torch (reused while its sources and torch stay)."""
    key = hashlib.sha256()
    for item in (EXAMPLE / "run_model.cpp", EXAMPLE / "CMakeLists.txt"):
        key.update(item.read_bytes())
    # The source directory too: CMake's cache records it, so another checkout needs its own build.
    for item in (str(EXAMPLE.resolve()), torch.__version__, torch.utils.cmake_prefix_path,
                 _extension.compiler_version()):
        key.update(item.encode())
    build = _extension.cache_dir() / "example_cpp" / key.hexdigest()[:16]
    cmake = _tool("cmake")
    if not (build / "CMakeCache.txt").is_file():
        configure = subprocess.run(
            [cmake, "-S", str(EXAMPLE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
            capture_output=True, text=True, timeout=600)
        assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    program = build / "run_model"
    assert program.is_file()
    return program


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The scripted models, an AOTInductor package of the dynamic one, their input and Python's outputs."""
    out = tmp_path_factory.mktemp("deploy")
    _export_models().main([str(out), "--aoti"])
    return out


def _run(program, kind, model, exported, output):
    env = {**os.environ, "LD_DEBUG": "libs"}  # the loader lists every library it initializes
    out = subprocess.run([str(program), str(tsb.ops_library_path()), kind, str(model), str(exported / "input.pt"),
                          str(output)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    loaded = re.findall(r"calling init: (\S+)", out.stderr)
    assert str(tsb.ops_library_path()) in loaded
    assert any(Path(p).name == "libtorch_cpu.so" for p in loaded)
    assert [p for p in loaded if "python" in Path(p).name] == []  # no libpython, no libtorch_python
    return torch.load(output)


@pytest.mark.parametrize("name", ["static", "dynamic"])
def test_cpp_program_runs_scripted_model_as_python(name, run_model, exported, tmp_path):
    expected = torch.load(exported / f"{name}.expected.pt")
    model = getattr(_export_models(), f"{name}_model")()
    x = torch.load(exported / "input.pt")
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # the scripted model's output is the eager one
    assert expected.shape == (7, 32) and expected.dtype == torch.float32
    assert 0.2 < (expected != 0).float().mean() < 1.0 and expected.unique().numel() > 20
    got = _run(run_model, "torchscript", exported / f"{name}.pt", exported, tmp_path / "out.pt")
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_aoti_package_runs_in_python_as_eager(exported):
    x = torch.load(exported / "input.pt")
    with torch.no_grad():
        eager = _export_models().dynamic_model()(x)
        loaded = torch._inductor.aoti_load_package(str(exported / "dynamic.pt2"))(x)
    assert eager.unique().numel() > 20
    assert torch.equal(loaded, eager)
    assert torch.equal(torch.load(exported / "dynamic.pt2.expected.pt"), eager)


def test_cpp_program_runs_aoti_package_as_python(run_model, exported, tmp_path):
    expected = torch.load(exported / "dynamic.pt2.expected.pt")
    got = _run(run_model, "aoti", exported / "dynamic.pt2", exported, tmp_path / "out.pt")
    assert torch.equal(got, expected)
    assert torch.equal(got, torch.load(exported / "dynamic.expected.pt"))


def test_cpp_program_without_the_ops_library_cannot_load_the_model(run_model, exported, tmp_path):
    # What the ops library provides: without it (an empty library in its place)
    # the model's class is unknown to TorchScript.
    empty = tmp_path / "libempty.so"
    subprocess.run([os.environ.get("CXX", "c++"), "-shared", "-x", "c++", "/dev/null", "-o", str(empty)], check=True)
    out = subprocess.run([str(run_model), str(empty), "torchscript", str(exported / "dynamic.pt"),
                          str(exported / "input.pt"), str(tmp_path / "out.pt")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1
    assert "torch_sparse_backend" in out.stderr and not (tmp_path / "out.pt").exists()

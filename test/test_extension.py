"""The JIT build: cache keying, failure reporting, and the command line."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import torch_sparse_backend as tsb
from torch_sparse_backend import _extension

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **env):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **env},
    )


def test_loaded_library_is_the_cached_build():
    path = _extension.load()
    assert path == _extension.library_path()
    assert path.is_file() and _extension.cache_dir() in path.parents
    assert torch.ops.torch_sparse_backend.qlinear_prepack.default is not None


def test_fingerprint_changes_with_flags(monkeypatch):
    root = _extension.source_dir()
    base = _extension._fingerprint(root)
    assert _extension._fingerprint(root) == base
    monkeypatch.setenv("TORCH_SPARSE_BACKEND_CFLAGS", "-DTSB_TEST_FLAG")
    assert _extension._fingerprint(root) != base


def test_failed_build_points_to_the_compiler_output(tmp_path):
    out = _run(
        ["-c", "import torch_sparse_backend"],
        TORCH_SPARSE_BACKEND_CACHE=str(tmp_path),
        TORCH_SPARSE_BACKEND_CFLAGS="-fno-such-compiler-flag",
    )
    assert out.returncode != 0
    assert "ExtensionBuildError" in out.stderr
    assert "building the C++ extension failed" in out.stderr
    assert str(tmp_path) in out.stderr
    assert "no-such-compiler-flag" in out.stdout + out.stderr  # the compiler's own complaint


def test_cli_info_and_build():
    info = _run(["-m", "torch_sparse_backend", "info"])
    assert info.returncode == 0, info.stderr
    assert f"torch              {torch.__version__}" in info.stdout
    assert f"active_kernel      {tsb.info()['active_kernel']}" in info.stdout
    build = _run(["-m", "torch_sparse_backend", "build"])
    assert build.returncode == 0, build.stderr
    assert str(_extension.library_path()) in build.stdout

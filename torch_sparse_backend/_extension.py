"""Builds (once) and loads the C++ extension that registers ``torch.ops.torch_sparse_backend``.

The extension is one shared library that is also a Python module: loading it
registers the ops and the TorchScript class with the dispatcher (static
initializers in csrc/ops.cpp) and gives the direct entry points of
csrc/python_bindings.cpp that ``torch_sparse_backend.functional`` calls.

The build is keyed by a fingerprint of every C++ source, the compiler flags, the
compiler's identity, the kind of build, and the torch and Python versions; a
cached build whose fingerprint matches is imported directly, anything else is
rebuilt with ``torch.utils.cpp_extension`` and ninja.

``TORCH_SPARSE_BACKEND_SANITIZE=1`` builds with AddressSanitizer and
UndefinedBehaviorSanitizer instead, into a separate cache directory; the process
must then run with the ASan runtime preloaded (see scripts/sanitize_tests.sh).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import torch

__all__ = [
    "ExtensionBuildError", "build_estimate", "build_jobs", "cache_dir", "compiler_version", "is_built", "is_loaded",
    "library_path", "load", "module", "source_dir", "units",
]

_NAME = "torch_sparse_backend_C"
# Part of the fingerprint: a library built as a plain shared object (no Python
# module init) must never be picked up as the Python module, and vice versa.
_BUILD_KIND = "python-module"
# Compiled first: with torch's Python headers it is the slowest translation unit,
# so ninja should start it before the others.
_FIRST_SOURCE = "python_bindings.cpp"
# Seconds of CPU one translation unit takes to compile, a wide range (the units
# differ, and so do machines and their load); the build's estimate is this times
# the unit count, spread over ninja's parallel jobs.
_UNIT_CPU_SECONDS = (4.0, 16.0)
# The build reports progress at least this often (seconds).
_PROGRESS_INTERVAL = 5.0
# -fopenmp: at::parallel_for is inline and runs serially unless the caller is
# compiled with OpenMP; the runtime it links is the libgomp torch already loaded.
_CFLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
_SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
_loaded_path: Path | None = None
_module = None


class ExtensionBuildError(RuntimeError):
    """The C++ extension failed to compile or load."""


def source_dir() -> Path:
    """Directory holding the C++ sources: inside the installed package, or the checkout's csrc/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parent / "csrc"):
        if (candidate / "ops.cpp").is_file():
            return candidate
    raise ExtensionBuildError(
        f"torch_sparse_backend: C++ sources not found next to {here} "
        "(expected csrc/ops.cpp); reinstall the package"
    )


def _sources(root: Path) -> list[Path]:
    first = root / _FIRST_SOURCE
    return [first] + sorted(p for p in root.rglob("*.cpp") if p != first)


def _compiler_identity() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return f"{cxx}: {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"{cxx}: unavailable ({e})"


def compiler_version() -> str:
    """The compiler a build runs (``CXX``, default ``c++``) and the first line of its ``--version``."""
    return _compiler_identity().splitlines()[0]


def sanitize() -> bool:
    """True when ``TORCH_SPARSE_BACKEND_SANITIZE`` asks for the ASan + UBSan build."""
    return os.environ.get("TORCH_SPARSE_BACKEND_SANITIZE", "") not in ("", "0")


def _extra_cflags() -> list[str]:
    extra = os.environ.get("TORCH_SPARSE_BACKEND_CFLAGS", "").split()
    return _CFLAGS + (_SANITIZE_FLAGS if sanitize() else []) + extra


def _asan_runtime_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return "libasan" in os.environ.get("LD_PRELOAD", "")


def _fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".cpp", ".h") and p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    for item in (
        _BUILD_KIND,
        " ".join(_extra_cflags()),
        _compiler_identity(),
        torch.__version__,
        sys.version,
        sysconfig.get_platform(),
    ):
        h.update(item.encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Root of the build cache (``TORCH_SPARSE_BACKEND_CACHE`` or ``~/.cache/torch_sparse_backend``)."""
    env = os.environ.get("TORCH_SPARSE_BACKEND_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torch_sparse_backend"


def _build_dir(root: Path) -> Path:
    if sanitize():
        return cache_dir() / "sanitize" / _fingerprint(root)
    return cache_dir() / _fingerprint(root)


def library_path() -> Path:
    """Path of the shared library for the current sources, built or not."""
    return _build_dir(source_dir()) / f"{_NAME}.so"


def module():
    """The extension's Python module (loading or building it first if needed)."""
    load()
    return _module


def _import(lib: Path):
    """Imports the built library as the Python module ``_NAME``, as cpp_extension does."""
    spec = importlib.util.spec_from_file_location(_NAME, lib)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {lib} as a Python extension module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def is_loaded() -> bool:
    """True once this process has loaded the extension (and so registered the ops)."""
    return _loaded_path is not None


def is_built() -> bool:
    """True when the cache holds a build of the current sources (loading it compiles nothing)."""
    return library_path().is_file()


def units() -> int:
    """Number of C++ translation units a build compiles (one object file each)."""
    return len(_sources(source_dir()))


def build_jobs(n_units: int) -> int:
    """Compile jobs ninja runs at once: ``MAX_JOBS`` if set, else one per usable core."""
    max_jobs = os.environ.get("MAX_JOBS", "")
    if max_jobs.isdigit() and int(max_jobs) > 0:
        jobs = int(max_jobs)
    else:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, n_units))


def build_estimate(n_units: int) -> tuple[int, int]:
    """Range of wall-clock seconds a build of ``n_units`` units is expected to take."""
    jobs = build_jobs(n_units)
    low, high = (n_units * s / jobs for s in _UNIT_CPU_SECONDS)
    return int(low // 5 * 5) or 5, int(-(-high // 5) * 5)


class _BuildProgress:
    """Reports, to stderr, how many object files of a build exist and the time elapsed.

    A thread watches the build directory while ``torch.utils.cpp_extension``
    runs ninja (which prints nothing until it ends): a line when a unit
    finishes, and at least every ``_PROGRESS_INTERVAL`` seconds.
    """

    def __init__(self, build: Path, objects: list[str], start: float) -> None:
        self._build = build
        self._objects = objects
        self._start = start
        self._wall_start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torch_sparse_backend build progress", daemon=True)

    def compiled(self) -> int:
        """Object files written since the build started."""
        done = 0
        for name in self._objects:
            try:
                if (self._build / name).stat().st_mtime >= self._wall_start - 1:
                    done += 1
            except OSError:
                pass
        return done

    def _run(self) -> None:
        last_done, last_report = 0, time.monotonic()
        while not self._stop.wait(0.5):
            done, now = self.compiled(), time.monotonic()
            if done != last_done or now - last_report >= _PROGRESS_INTERVAL:
                _say(f"compiled {done}/{len(self._objects)} units, {now - self._start:.0f} s")
                last_done, last_report = done, now

    def __enter__(self) -> "_BuildProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _say(message: str) -> None:
    print(f"torch_sparse_backend: {message}", file=sys.stderr, flush=True)


def load(verbose: bool | None = None) -> Path:
    """Loads the extension, building it first if no matching build is cached.

    Returns the path of the library; :func:`module` gives the Python module.
    """
    global _loaded_path, _module
    if _loaded_path is not None:
        return _loaded_path
    root = source_dir()
    build = _build_dir(root)
    lib = build / f"{_NAME}.so"
    if verbose is None:
        verbose = os.environ.get("TORCH_SPARSE_BACKEND_VERBOSE", "") not in ("", "0")
    if sanitize() and not _asan_runtime_loaded():
        raise ExtensionBuildError(
            "torch_sparse_backend: TORCH_SPARSE_BACKEND_SANITIZE is set but the AddressSanitizer "
            "runtime is not loaded; preload it and the C++ runtime with "
            'LD_PRELOAD="$(c++ -print-file-name=libasan.so) $(c++ -print-file-name=libstdc++.so)" '
            "(scripts/sanitize_tests.sh does this)"
        )
    if not lib.is_file():
        mod = _build(root, build, verbose)
    else:
        try:
            mod = _import(lib)
        except ImportError as e:
            raise ExtensionBuildError(
                f"torch_sparse_backend: cannot load {lib}: {e}. Delete {build} to rebuild."
            ) from e
    _module = mod
    _loaded_path = lib
    return lib


def _build(root: Path, build: Path, verbose: bool):
    """Compiles the sources under ``root`` into ``build`` and imports the result."""
    if shutil.which("ninja") is None and not _ninja_module_available():
        raise ExtensionBuildError(
            "torch_sparse_backend: building the C++ kernels needs ninja; "
            "install it with `pip install ninja`"
        )
    sources = _sources(root)
    low, high = build_estimate(len(sources))
    jobs = build_jobs(len(sources))
    wrapper = next((w for w in ("ccache", "sccache") if shutil.which(w)), None)  # torch.utils.cpp_extension uses it
    cached = f"; less where {wrapper} holds the objects" if wrapper else ""
    _say(
        f"building the C++ kernels, once per source change: {len(sources)} units on {jobs} "
        f"core{'s' if jobs > 1 else ''}, expect {low}-{high} s{cached}; into {build}"
    )
    start = time.monotonic()
    build.mkdir(parents=True, exist_ok=True)
    objects = [p.stem + ".o" for p in sources]
    try:
        from torch.utils import cpp_extension

        with _BuildProgress(build, objects, start):
            mod = cpp_extension.load(
                name=_NAME,
                sources=[str(p) for p in sources],
                extra_cflags=_extra_cflags(),
                extra_ldflags=_LDFLAGS + (_SANITIZE_FLAGS if sanitize() else []),
                extra_include_paths=[str(root)],
                build_directory=str(build),
                is_python_module=True,
                verbose=verbose,
            )
    except Exception as e:  # the compiler's output is in the chained exception
        raise ExtensionBuildError(
            "torch_sparse_backend: building the C++ extension failed. The compiler "
            f"output is above and in the exception chain; build files are in {build}. "
            "Rerun with TORCH_SPARSE_BACKEND_VERBOSE=1 for the full commands."
        ) from e
    _say(f"built {len(sources)} units in {time.monotonic() - start:.1f} s")
    return mod


def _ninja_module_available() -> bool:
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True

"""Builds (once) and loads the C++ libraries that register ``torch.ops.torch_sparse_backend``.

One build makes two shared libraries from csrc/:

- the ops library, ``libtorch_sparse_backend_ops.so``: the op schemas and kernels,
  the TorchScript class ``SparseLinearPackedParams`` and the kernel core (every
  source but python_bindings.cpp). It links libtorch and c10 only, holds no
  Python symbol, and is the file a C++ program or an AOTInductor deployment loads
  (docs/deploy.md). Loading it registers the ops and the class with the
  dispatcher (static initializers in csrc/ops.cpp).
- the Python extension module, ``torch_sparse_backend_C.so``: the direct entry
  points of csrc/python_bindings.cpp that ``torch_sparse_backend.functional``
  calls. It links the ops library, which it finds next to itself (rpath
  ``$ORIGIN``), and libtorch_python.

Python loads the ops library with ``torch.ops.load_library`` and then imports
the module.

The build is keyed by a fingerprint of every C++ source, the compiler flags, the
compiler's identity, the kind of build, and the torch and Python versions; a
cached build whose fingerprint matches is loaded directly, anything else is
rebuilt by one ninja run over a build.ninja written here with the compiler,
include paths and libraries of ``torch.utils.cpp_extension``, one compile edge
per source (so an interrupted build resumes where it stopped) and one link edge
per library.

``TORCH_SPARSE_BACKEND_SANITIZE=1`` builds with AddressSanitizer and
UndefinedBehaviorSanitizer instead, into a separate cache directory; the process
must then run with the ASan runtime preloaded (see scripts/sanitize_tests.sh).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
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
    "library_path", "load", "module", "ops_library_path", "source_dir", "units",
]

# The Python extension module (python_bindings.cpp).
_NAME = "torch_sparse_backend_C"
# The ops library, lib<name>.so (every other source).
_OPS_NAME = "torch_sparse_backend_ops"
# Part of the fingerprint: a cache entry of another layout (one library that is
# also the Python module) must never be picked up as this one, and vice versa.
_BUILD_KIND = "ops-library+python-module"
# The Python module's only source. Compiled first: with torch's Python headers it
# is the slowest translation unit, so ninja should start it before the others.
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
        " ".join(_LDFLAGS),
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
    """Path of the Python extension module for the current sources, built or not."""
    return _build_dir(source_dir()) / f"{_NAME}.so"


def ops_library_path() -> Path:
    """Path of the ops library for the current sources, built or not.

    The file a C++ program or an AOTInductor deployment loads: it registers the
    ops and the TorchScript class, and needs libtorch and c10 but no Python.
    """
    return _build_dir(source_dir()) / f"lib{_OPS_NAME}.so"


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
    return ops_library_path().is_file() and library_path().is_file()


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
    """Loads the ops library and the Python module, building them first if no matching build is cached.

    Returns the path of the Python module's library; :func:`module` gives the
    module, :func:`ops_library_path` the ops library.
    """
    global _loaded_path, _module
    if _loaded_path is not None:
        return _loaded_path
    root = source_dir()
    build = _build_dir(root)
    lib = build / f"{_NAME}.so"
    ops_lib = build / f"lib{_OPS_NAME}.so"
    if verbose is None:
        verbose = os.environ.get("TORCH_SPARSE_BACKEND_VERBOSE", "") not in ("", "0")
    if sanitize() and not _asan_runtime_loaded():
        raise ExtensionBuildError(
            "torch_sparse_backend: TORCH_SPARSE_BACKEND_SANITIZE is set but the AddressSanitizer "
            "runtime is not loaded; preload it and the C++ runtime with "
            'LD_PRELOAD="$(c++ -print-file-name=libasan.so) $(c++ -print-file-name=libstdc++.so)" '
            "(scripts/sanitize_tests.sh does this)"
        )
    if not (lib.is_file() and ops_lib.is_file()):
        _build(root, build, verbose)
    try:
        torch.ops.load_library(str(ops_lib))
    except OSError as e:
        raise ExtensionBuildError(
            f"torch_sparse_backend: cannot load {ops_lib}: {e}. Delete {build} to rebuild."
        ) from e
    try:
        mod = _import(lib)
    except ImportError as e:
        raise ExtensionBuildError(
            f"torch_sparse_backend: cannot load {lib}: {e}. Delete {build} to rebuild."
        ) from e
    _module = mod
    _loaded_path = lib
    return lib


def _build(root: Path, build: Path, verbose: bool) -> None:
    """Compiles the sources under ``root`` into the two libraries in ``build``."""
    ninja = _ninja_executable()
    sources = _sources(root)
    low, high = build_estimate(len(sources))
    jobs = build_jobs(len(sources))
    wrapper = _compiler_wrapper()
    cached = f"; less where {wrapper} holds the objects" if wrapper else ""
    _say(
        f"building the C++ kernels, once per source change: {len(sources)} units on {jobs} "
        f"core{'s' if jobs > 1 else ''}, expect {low}-{high} s{cached}; into {build}"
    )
    start = time.monotonic()
    build.mkdir(parents=True, exist_ok=True)
    objects = [p.stem + ".o" for p in sources]
    try:
        from torch.utils.file_baton import FileBaton

        # Another process building the same sources holds the lock: wait for it.
        baton = FileBaton(str(build / "lock"))
        if baton.try_acquire():
            try:
                (build / "build.ninja").write_text(_ninja_file(root, sources), encoding="utf-8")
                with _BuildProgress(build, objects, start):
                    _run_ninja(ninja, build, verbose)
            finally:
                baton.release()
        else:
            baton.wait()
        missing = [p.name for p in (build / f"lib{_OPS_NAME}.so", build / f"{_NAME}.so") if not p.is_file()]
        if missing:
            raise RuntimeError(f"the build left no {' or '.join(missing)}")
    except Exception as e:  # the compiler's output is in the chained exception
        raise ExtensionBuildError(
            "torch_sparse_backend: building the C++ extension failed. The compiler "
            f"output is above and in the exception chain; build files are in {build}. "
            "Rerun with TORCH_SPARSE_BACKEND_VERBOSE=1 for the full commands."
        ) from e
    _say(f"built {len(sources)} units in {time.monotonic() - start:.1f} s")


def _compiler_wrapper() -> str | None:
    """``ccache`` or ``sccache`` when installed (as torch.utils.cpp_extension uses them), else None."""
    if os.environ.get("TORCH_NO_COMPILER_WRAPPER"):
        return None
    return next((w for w in ("ccache", "sccache") if shutil.which(w)), None)


def _ninja_executable() -> str:
    found = shutil.which("ninja")
    if found is None and _ninja_module_available():
        import ninja

        candidate = Path(ninja.BIN_DIR) / "ninja"
        found = str(candidate) if candidate.is_file() else None
    if found is None:
        raise ExtensionBuildError(
            "torch_sparse_backend: building the C++ kernels needs ninja; "
            "install it with `pip install ninja`"
        )
    return found


def _ninja_escape(text: str) -> str:
    """``text`` as a path in a ninja build statement."""
    return text.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _ninja_var(args: list[str]) -> str:
    """Shell words as the value of a ninja variable (quoted for the shell, ``$`` escaped)."""
    return " ".join(shlex.quote(a) for a in args).replace("$", "$$")


def _ninja_file(root: Path, sources: list[Path]) -> str:
    """build.ninja for both libraries, with torch.utils.cpp_extension's compiler, headers and libraries.

    Every source but python_bindings.cpp goes into the ops library, compiled
    without Python's headers and linked with libtorch and c10 only; the Python
    module compiles python_bindings.cpp as an extension module and links the
    ops library (found next to it through rpath ``$ORIGIN``) and libtorch_python.
    """
    from torch.utils import cpp_extension

    compiler = cpp_extension.get_cxx_compiler()
    cpp_extension.get_compiler_abi_compatibility_and_version(compiler)  # warns about a mismatched compiler
    wrapper = _compiler_wrapper()
    sanitizer = _SANITIZE_FLAGS if sanitize() else []
    includes = [f"-I{root}"]
    for path in cpp_extension.include_paths("cpu"):
        includes += ["-isystem", path]
    cflags = includes + ["-fPIC", "-std=c++20"] + _extra_cflags()
    python_include = sysconfig.get_path("include", scheme="posix_prefix")
    python_cflags = [f"-DTORCH_EXTENSION_NAME={_NAME}", "-DTORCH_API_INCLUDE_EXTENSION_H", "-isystem", python_include]
    torch_libs = [f"-L{d}" for d in cpp_extension.library_paths("cpu")] + ["-lc10", "-ltorch_cpu", "-ltorch"]
    ops_file = f"lib{_OPS_NAME}.so"
    ops_ldflags = ["-shared", f"-Wl,-soname,{ops_file}", *_LDFLAGS, *sanitizer, *torch_libs]
    # The module records the ops library as needed even where the linker drops
    # libraries whose symbols go unused (--as-needed), so that importing the
    # module alone registers the ops it calls.
    module_ldflags = ["-shared", "-L.", "-Wl,--push-state,--no-as-needed", f"-l{_OPS_NAME}", "-Wl,--pop-state",
                      "-Wl,-rpath,$ORIGIN", *sanitizer, *torch_libs, "-ltorch_python"]
    first, ops_sources = sources[0], sources[1:]
    if first.name != _FIRST_SOURCE:
        raise ExtensionBuildError(f"torch_sparse_backend: {root} has no {_FIRST_SOURCE}")
    lines = [
        "ninja_required_version = 1.3",
        f"cxx = {_ninja_var(([wrapper] if wrapper else []) + [compiler])}",
        f"cflags = {_ninja_var(cflags)}",
        f"python_cflags = {_ninja_var(python_cflags)}",
        f"ops_ldflags = {_ninja_var(ops_ldflags)}",
        f"module_ldflags = {_ninja_var(module_ldflags)}",
        "",
        "rule compile",
        "  command = $cxx -MMD -MF $out.d $cflags $extra -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "",
        "rule link_ops",
        "  command = $cxx $in $ops_ldflags -o $out",
        "",
        "rule link_module",
        "  command = $cxx $in $module_ldflags -o $out",
        "",
        f"build {_FIRST_SOURCE[:-4]}.o: compile {_ninja_escape(str(first))}",
        "  extra = $python_cflags",
    ]
    lines += [f"build {p.stem}.o: compile {_ninja_escape(str(p))}" for p in ops_sources]
    lines += [
        f"build {ops_file}: link_ops {' '.join(p.stem + '.o' for p in ops_sources)}",
        f"build {_NAME}.so: link_module {_FIRST_SOURCE[:-4]}.o | {ops_file}",
        f"default {_NAME}.so",
    ]
    return "\n".join(lines) + "\n"


def _run_ninja(ninja: str, build: Path, verbose: bool) -> None:
    """Runs ninja in ``build`` (``MAX_JOBS`` jobs if set, ninja's default otherwise)."""
    command = [ninja, "-v"]
    max_jobs = os.environ.get("MAX_JOBS", "")
    if max_jobs.isdigit() and int(max_jobs) > 0:
        command += ["-j", max_jobs]
    sys.stdout.flush()
    sys.stderr.flush()
    out = subprocess.run(command, cwd=build, stdout=None if verbose else subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ninja failed in {build} (exit status {out.returncode}): {out.stdout or ''}")


def _ninja_module_available() -> bool:
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True

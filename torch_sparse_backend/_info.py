"""What the plugin detected and will run on this machine, and what a build compiles."""

from __future__ import annotations

import platform

import torch

from . import _extension

__all__ = ["info"]


def info() -> dict[str, object]:
    """Torch version, CPU features, kernel variants, the build and its cache location.

    Loads the library when the cache holds a build of the current sources; never
    builds it. Without a build, ``built`` is False and the kernel entries are
    None (what the CPU runs is known once the library is loaded).
    """
    built = _extension.is_loaded() or _extension.is_built()
    if built:
        _extension.load()
    ops = torch.ops.torch_sparse_backend
    n_units = _extension.units()
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "built": built,
        "cpu_features": list(ops._cpu_features()) if built else None,
        "compiled_kernels": list(ops._compiled_kernels()) if built else None,
        "runnable_kernels": list(ops._runnable_kernels()) if built else None,
        "active_kernel": ops._active_kernel() if built else None,
        "intra_op_threads": (torch.get_num_threads() if ops._intra_op_parallel() else 1) if built else None,
        "library": str(_extension.library_path()),
        "ops_library": str(_extension.ops_library_path()),
        "cache_dir": str(_extension.cache_dir()),
        "sources": str(_extension.source_dir()),
        "compiler": _extension.compiler_version(),
        "build_units": n_units,
        "build_estimate_s": list(_extension.build_estimate(n_units)),
    }

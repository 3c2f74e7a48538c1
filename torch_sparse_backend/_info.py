"""What the plugin detected and will run on this machine."""

from __future__ import annotations

import platform

import torch

from . import _extension

__all__ = ["info"]


def info() -> dict[str, object]:
    """Torch version, CPU features, kernel variants and the build cache location."""
    ops = torch.ops.torch_sparse_backend
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_features": list(ops._cpu_features()),
        "compiled_kernels": list(ops._compiled_kernels()),
        "runnable_kernels": list(ops._runnable_kernels()),
        "active_kernel": ops._active_kernel(),
        "intra_op_threads": torch.get_num_threads() if ops._intra_op_parallel() else 1,
        "library": str(_extension.library_path()),
        "cache_dir": str(_extension.cache_dir()),
    }

"""Block-sparse int8 linear layers for torch.ao quantization on x86 and ARM CPUs.

Importing the package builds the C++ kernels once (cached) and registers the ops
``torch.ops.torch_sparse_backend.{qlinear_prepack, qlinear_unpack, qlinear,
qlinear_relu, qlinear_dynamic, qlinear_relu_dynamic}`` on quantized dtypes, their
plain-tensor forms ``{qlinear_prepack_int8, qlinear_unpack_int8, qlinear_uint8,
qlinear_relu_uint8}``, and the TorchScript class
``torch.classes.torch_sparse_backend.SparseLinearPackedParams``.
``torch_sparse_backend.functional`` holds the same ops as Python functions that
skip torch.ops' per-call overhead in eager mode. The ops and the class live in a
library that needs no Python (:func:`ops_library_path`), which C++ programs load
to run scripted models and AOTInductor packages (docs/deploy.md).

``python -m torch_sparse_backend`` imports this package before it runs
``__main__``; that import leaves the extension alone, so that ``--help`` and
``info`` build nothing, and ``__main__`` completes the import (:func:`_complete_import`)
for the commands that use the ops.
"""

import sys

from ._extension import ExtensionBuildError
from ._extension import load as _load
from ._extension import ops_library_path


def _imported_by_python_m() -> bool:
    """True while ``python -m torch_sparse_backend`` imports the package to find ``__main__``.

    During that search ``sys.argv[0]`` is ``"-m"`` (runpy sets it to the file's
    path before ``__main__`` runs); ``sys.orig_argv`` names the module.
    """
    if sys.argv[:1] != ["-m"]:
        return False
    argv = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(argv):
        target = argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg[2:] if arg.startswith("-m") else None
        if target is not None:
            return target in (__name__, f"{__name__}.__main__")
    return False


def _complete_import() -> None:
    """Loads the extension (building it if needed) and the modules that use its ops."""
    import importlib

    if "nn" not in globals():
        importlib.reload(sys.modules[__name__])


if not _imported_by_python_m():
    _load()

    from . import _fake, functional, nn, torchao  # noqa: F401  (torchao imports the torchao package lazily)
    from ._density import DEFAULT_MAX_DENSITY, block_density
    from ._info import info
    from ._summary import summary
    from .fx import convert_fx, get_sparse_backend_config
    from .mappings import (
        SparseOrDense,
        get_default_dynamic_sparse_quant_module_mappings,
        get_default_static_sparse_quant_module_mappings,
    )

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_DENSITY",
    "ExtensionBuildError",
    "block_density",
    "convert_fx",
    "functional",
    "get_sparse_backend_config",
    "summary",
    "SparseOrDense",
    "get_default_dynamic_sparse_quant_module_mappings",
    "get_default_static_sparse_quant_module_mappings",
    "info",
    "nn",
    "ops_library_path",
    "torchao",
]

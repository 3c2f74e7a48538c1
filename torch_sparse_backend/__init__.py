"""Block-sparse int8 linear layers for torch.ao quantization on x86 and ARM CPUs.

Importing the package builds the C++ kernels once (cached) and registers the
ops ``torch.ops.torch_sparse_backend.{qlinear_prepack, qlinear_unpack, qlinear,
qlinear_relu, qlinear_dynamic, qlinear_relu_dynamic}`` and the TorchScript class
``torch.classes.torch_sparse_backend.SparseLinearPackedParams``.
``torch_sparse_backend.functional`` holds the same ops as Python functions that
skip torch.ops' per-call overhead in eager mode.
"""

from ._extension import ExtensionBuildError
from ._extension import load as _load

_load()

from . import _fake, functional, nn  # noqa: E402,F401
from ._density import DEFAULT_MAX_DENSITY, block_density  # noqa: E402
from ._info import info  # noqa: E402
from ._summary import summary  # noqa: E402
from .fx import convert_fx, get_sparse_backend_config  # noqa: E402
from .mappings import (  # noqa: E402
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
]

"""When a pruned linear runs on the sparse kernels, and when it stays dense."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .nn._base import block_shape_of

__all__ = ["DEFAULT_MAX_DENSITY", "SparsityDecision", "block_density", "decide"]

logger = logging.getLogger("torch_sparse_backend")

# Above this fraction of nonzero blocks the sparse kernels are no faster than
# torch's dense int8 kernels at every batch size (scripts/bench.py compares
# them), so such layers are converted to torch's dense quantized modules.
DEFAULT_MAX_DENSITY = 0.35


def block_density(weight: torch.Tensor, block_shape: tuple[int, int]) -> float:
    """Fraction of the blocks of ``weight`` (``block_shape`` = (rb, cb), the weight padded
    to whole blocks) that hold a nonzero."""
    rb, cb = block_shape
    w = weight.detach()
    if w.is_quantized:
        w = w.int_repr()
    nz = (w != 0).to(torch.uint8)
    n, k = nz.shape
    nz = torch.nn.functional.pad(nz, (0, -k % cb, 0, -n % rb))
    blocks = nz.reshape(nz.shape[0] // rb, rb, nz.shape[1] // cb, cb).amax(dim=(1, 3))
    return float(blocks.float().mean())


@dataclass(frozen=True)
class SparsityDecision:
    name: str
    block_shape: tuple[int, int]
    density: float
    sparse: bool


def decide(name: str, linear: torch.nn.Module, max_density: float = DEFAULT_MAX_DENSITY) -> SparsityDecision:
    """Whether ``linear`` (carrying sparse_params) should run on the sparse kernels."""
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density}")
    block_shape = block_shape_of(linear)
    density = block_density(linear.weight, block_shape)
    sparse = density <= max_density
    if not sparse:
        logger.info(
            "%s: %.1f%% of its %dx%d blocks are nonzero, above max_density=%.0f%%; "
            "converted to torch's dense quantized Linear, which is faster at this density",
            name or type(linear).__name__, 100 * density, block_shape[0], block_shape[1], 100 * max_density,
        )
    return SparsityDecision(name, block_shape, density, sparse)

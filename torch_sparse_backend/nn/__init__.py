"""Sparse quantized modules mirroring ``torch.ao.nn.sparse.quantized``."""

from . import dynamic
from .linear import Linear, LinearReLU

__all__ = ["Linear", "LinearReLU", "dynamic"]

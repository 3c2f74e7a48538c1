"""Dynamic (float in, float out) sparse quantized modules."""

from .linear import Linear, LinearReLU

__all__ = ["Linear", "LinearReLU"]

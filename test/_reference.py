"""Exact references for the numerics contract, in numpy, independent of the C++ code."""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "make_sparse_qweight",
    "reference_qlinear",
    "reference_qlinear_dynamic",
    "quantize_activation",
]


def make_sparse_qweight(
    n: int,
    k: int,
    block: tuple[int, int],
    density: float,
    per_channel: bool,
    generator: torch.Generator,
    wmax: int = 127,
    wmin: int | None = None,
) -> torch.Tensor:
    """A qint8 weight whose nonzeros lie in a random subset of rb x cb blocks."""
    rb, cb = block
    wmin = -wmax if wmin is None else wmin
    values = torch.randint(wmin, wmax + 1, (n, k), dtype=torch.int8, generator=generator)
    nbr, nbc = -(-n // rb), -(-k // cb)
    keep = torch.rand(nbr, nbc, generator=generator) < density
    mask = keep.repeat_interleave(rb, 0).repeat_interleave(cb, 1)[:n, :k]
    w = values * mask
    if per_channel:
        scales = torch.rand(n, dtype=torch.double, generator=generator) * 0.02 + 1e-3
        return torch._make_per_channel_quantized_tensor(w, scales, torch.zeros(n, dtype=torch.long), 0)
    return torch._make_per_tensor_quantized_tensor(w, 0.0071, 0)


def _weight_scales(w: torch.Tensor) -> np.ndarray:
    n = w.size(0)
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return w.q_per_channel_scales().numpy().astype(np.float32)
    return np.full(n, np.float32(w.q_scale()), dtype=np.float32)


def _accumulate(xq: np.ndarray, x_zp: int, w: torch.Tensor) -> np.ndarray:
    wi = w.int_repr().numpy().astype(np.int64)
    acc = (xq.astype(np.int64) - x_zp) @ wi.T
    assert np.abs(acc).max(initial=0) < 2**31
    return acc.astype(np.int32)


def reference_qlinear(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, y_scale: float, y_zp: int, relu: bool
) -> torch.Tensor:
    """Static op: exact int32 accumulation, then torch's dense fbgemm requantization (uint8)."""
    k = w.size(1)
    xq = x.int_repr().reshape(-1, k).numpy()
    acc = _accumulate(xq, x.q_zero_point(), w)
    f32 = np.float32
    act_times_w = f32(x.q_scale()) * _weight_scales(w)
    requant = act_times_w / f32(y_scale)
    bias = np.zeros(w.size(0), np.float32) if b is None else b.detach().numpy().astype(np.float32)
    bias_scaled = bias / act_times_w
    v = (acc.astype(np.float32) + bias_scaled) * requant
    lo = y_zp if relu else 0
    v = np.clip(v, f32(lo - y_zp), f32(255 - y_zp))
    y = (np.rint(v).astype(np.int32) + y_zp).astype(np.uint8)
    return torch.from_numpy(y).reshape(*x.shape[:-1], w.size(0))


def quantize_activation(x: torch.Tensor) -> tuple[np.ndarray, float, int]:
    """Dynamic-mode activation quantization: torch's qparams (reduce_range=False), then rounding."""
    xf = x.detach().reshape(-1, x.size(-1)).contiguous()
    scale, zp = torch._choose_qparams_per_tensor(xf, False)
    inv = np.float32(1.0) / np.float32(scale)
    q = np.rint(xf.numpy().astype(np.float32) * inv)
    q = np.clip(q, -zp, 255 - zp) + zp
    return q.astype(np.uint8), float(np.float32(scale)), int(zp)


def reference_qlinear_dynamic(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    """Dynamic op: quantize x, exact integer product, y = float(acc) * (x_scale * w_scale) + bias."""
    xq, x_scale, x_zp = quantize_activation(x)
    acc = _accumulate(xq, x_zp, w)
    dq = np.float32(x_scale) * _weight_scales(w)
    bias = np.zeros(w.size(0), np.float32) if b is None else b.detach().numpy().astype(np.float32)
    y = acc.astype(np.float32) * dq
    y = y + bias
    if relu:
        y = np.where(y > 0, y, np.float32(0))
    return torch.from_numpy(y.astype(np.float32)).reshape(*x.shape[:-1], w.size(0))

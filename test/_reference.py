"""Exact references for the numerics contract, in numpy, independent of the C++ code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

__all__ = [
    "dense_int8_works",
    "reference_engine",
    "ExactQLinear",
    "make_sparse_qweight",
    "reference_qlinear",
    "reference_qlinear_dynamic",
    "quantize_activation",
    "torch_quantized_activation",
    "check_activation_rounding",
    "dense_dynamic_expectation",
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


def torch_quantized_activation(x: torch.Tensor) -> tuple[np.ndarray, float, int]:
    """torch's own dynamic activation quantization, the one its dense dynamic ops use.

    Same qparams as quantize_activation, and the same values except for single
    units where torch rounds by another rule: on aarch64 it does not round
    through the float32 product, so at exact ties x * (1 / scale) = k + 0.5 it
    may give k where quantize_activation (and our ops everywhere) rounds half
    to even; on AVX-512 hosts it rounds rint(fma(x, 1 / scale, zp)) in float32,
    which differs at and next to ties. check_activation_rounding asserts that
    these are the only differences.
    """
    xf = x.detach().reshape(-1, x.size(-1)).contiguous()
    xq = torch.quantize_per_tensor_dynamic(xf, torch.quint8, False)
    return xq.int_repr().numpy(), float(xq.q_scale()), int(xq.q_zero_point())


def fma_rounded_activation(xf: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """rint(fma(x, float32(1 / scale), zp)) in float32, clamped to 0..255: the fused
    multiply-add is exact in float64 (a 24-bit by 24-bit product plus a small
    integer), then rounded once to float32."""
    inv = np.float32(1.0) / np.float32(scale)
    fused = (xf.astype(np.float64) * np.float64(inv) + np.float64(zp)).astype(np.float32)
    return np.clip(np.rint(fused), 0, 255).astype(np.uint8)


def check_activation_rounding(x: torch.Tensor) -> int:
    """Asserts that torch's activation quantization equals quantize_activation's but
    for single units that one of torch's other rounding rules explains (see
    torch_quantized_activation); returns the number of such elements."""
    ours, scale, zp = quantize_activation(x)
    theirs, t_scale, t_zp = torch_quantized_activation(x)
    assert (np.float32(t_scale), t_zp) == (np.float32(scale), zp), ((t_scale, t_zp), (scale, zp))
    differ = ours != theirs
    if differ.any():
        xf = x.detach().reshape(-1, x.size(-1)).numpy().astype(np.float32)[differ]
        product = xf * (np.float32(1.0) / np.float32(scale))
        at_tie = product - np.floor(product) == np.float32(0.5)
        fma_rule = fma_rounded_activation(xf, scale, zp) == theirs[differ]
        assert np.all(at_tie | fma_rule), product[~(at_tie | fma_rule)]
        assert np.all(np.abs(ours[differ].astype(int) - theirs[differ].astype(int)) == 1)
    return int(differ.sum())


def reference_qlinear_dynamic(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    relu: bool,
    activation: tuple[np.ndarray, float, int] | None = None,
) -> torch.Tensor:
    """Dynamic op: quantize x, exact integer product, y = float(acc) * (x_scale * w_scale) + bias.

    `activation` replaces quantize_activation(x), e.g. by torch_quantized_activation(x).
    """
    xq, x_scale, x_zp = quantize_activation(x) if activation is None else activation
    acc = _accumulate(xq, x_zp, w)
    dq = np.float32(x_scale) * _weight_scales(w)
    bias = np.zeros(w.size(0), np.float32) if b is None else b.detach().numpy().astype(np.float32)
    y = acc.astype(np.float32) * dq
    y = y + bias
    if relu:
        y = np.where(y > 0, y, np.float32(0))
    return torch.from_numpy(y.astype(np.float32)).reshape(*x.shape[:-1], w.size(0))


def dense_dynamic_expectation(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    """What torch's dense dynamic op (reduce_range=False, qnnpack) must return: the
    exact integer product on torch's own quantized activations. Equal to
    reference_qlinear_dynamic(x, ...) wherever check_activation_rounding finds no
    tie, which it asserts is the only possible difference."""
    check_activation_rounding(x)
    return reference_qlinear_dynamic(x, w, b, relu, torch_quantized_activation(x))


# --- Which engine torch's dense int8 ops can serve as a reference under --------

_DENSE_INT8_WORKS: dict[str, bool] = {}

# Run in a child process: a dense op that crashes (SIGILL) must not take pytest down.
_DENSE_INT8_PROBE = """
import sys, torch
torch.backends.quantized.engine = sys.argv[1]
g = torch.Generator().manual_seed(0)
w = torch.quantize_per_tensor(torch.randn(8, 16, generator=g), 0.02, 0, torch.qint8)
x = torch.randn(3, 16, generator=g)
x_q = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)
# One packed weight per op, as in the tests (onednn on x86 crashes when one
# packed weight serves the static and then the dynamic op).
torch.ops.quantized.linear(x_q, torch.ops.quantized.linear_prepack(w, None), 0.1, 128)
torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(w, None), False)
torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(w, None), True)
"""


def dense_int8_works(engine: str) -> bool:
    """Whether torch's dense ``quantized::linear_prepack``, ``linear`` and ``linear_dynamic`` run under ``engine``.

    Probed once per engine with a tiny layer in a child process (so that a crash
    is an answer, not the end of the test run), the answer cached. On torch 2.13
    aarch64, ``x86`` and ``fbgemm`` are listed in ``supported_engines``
    (``x86`` the default) but their dense kernels are FBGEMM's, x86 only: prepack
    raises ``RuntimeError: unknown architecure``; under qemu ``-cpu max``,
    ``onednn``'s dense ``linear_dynamic`` dies of SIGILL.
    """
    if engine not in _DENSE_INT8_WORKS:
        probe = subprocess.run(
            [sys.executable, "-c", _DENSE_INT8_PROBE, engine], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _DENSE_INT8_WORKS[engine] = probe.returncode == 0
    return _DENSE_INT8_WORKS[engine]


def reference_engine(engine: str | None = None) -> str:
    """The engine to compute torch's dense int8 reference under, for ``engine``.

    ``engine`` itself (default: the current ``torch.backends.quantized.engine``)
    where torch's dense int8 works under it, so nothing changes on x86. Else
    ``qnnpack``: the engine torch's dense int8 runs under on ARM, and one the
    numerics contract has a precise relation to: its dense static op accumulates
    in exact int32 and is within 1 unit of ours (it rounds differently from
    fbgemm, whose requantization ours reproduces bit for bit), and its dense
    dynamic op computes exactly what ours does. So a check that is bit-exact
    against dense fbgemm must be read as within 1 unit when this returns
    anything but ``fbgemm``. Only the reference moves: our ops still run under
    every engine in ``supported_engines``.
    """
    engine = torch.backends.quantized.engine if engine is None else engine
    if dense_int8_works(engine):
        return engine
    if not dense_int8_works("qnnpack"):
        raise RuntimeError(f"torch's dense int8 works neither under {engine!r} nor under 'qnnpack'")
    return "qnnpack"


class ExactQLinear(torch.nn.Module):
    """Stands in for a dense static quantized Linear / LinearReLU of a converted model.

    Computes the layer with ``reference_qlinear`` (dense fbgemm's requantization on
    the exact int32 sum), so a whole model can be checked bit for bit against
    ``dense fbgemm`` semantics where the fbgemm engine does not run. Records the
    largest difference, in units, from the dense module it replaces, run under
    the current engine.
    """

    def __init__(self, dense: torch.nn.Module, relu: bool):
        super().__init__()
        self.dense, self.relu = dense, relu
        self.max_diff_to_dense = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dense
        y = reference_qlinear(x, d.weight(), d.bias(), d.scale, d.zero_point, self.relu)
        y = torch._make_per_tensor_quantized_tensor(y, d.scale, d.zero_point)
        diff = (y.int_repr().int() - d(x).int_repr().int()).abs().max().item() if y.numel() else 0
        self.max_diff_to_dense = max(self.max_diff_to_dense, diff)
        return y

"""Memory: prepack, apply, serialize (torch.save and TorchScript) and load in a
bounded loop, including rejected loads; the resident set size must stay flat
after warm-up. Each iteration handles about 1 MB of packed weights, so a leak
of any of them would grow the process by far more than the tolerance."""

import ctypes
import gc
import io
import os

import torch

import torch_sparse_backend as tsb
from _reference import make_sparse_qweight

OPS = torch.ops.torch_sparse_backend
QUALNAME = "__torch__.torch.classes.torch_sparse_backend.SparseLinearPackedParams"
WARMUP, ITERATIONS = 20, 120
# A leak of one iteration's packed weight alone (0.75 MB) would add 90 MB.
TOLERANCE_MB = 16.0


def _rss_mb() -> float:
    """Resident set after a collection, with free heap memory handed back to the
    system (glibc's malloc_trim, where there is one), so that what is measured is
    live memory rather than the allocator's free lists."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _iteration(w, bias, scripted_bytes, x, xq):
    packed = OPS.qlinear_prepack(w, bias, 1, 4)
    OPS.qlinear(xq, packed, 0.5, 100)
    OPS.qlinear_relu_dynamic(x, packed)
    OPS.qlinear_unpack(packed)
    OPS._with_kernel(packed, "reference")

    buf = io.BytesIO()
    torch.save(packed, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    OPS.qlinear_dynamic(x, loaded)

    module = torch.jit.load(io.BytesIO(scripted_bytes))
    module(x)

    state = packed.__getstate__()[0]
    version, sizes, tensors, b = state
    obj = torch.ScriptObject.__new__(torch.ScriptObject)
    obj.__setstate__((state, QUALNAME))
    bad = (version, sizes, tensors[:3] + [tensors[3][:-1]], b)
    try:
        torch.ScriptObject.__new__(torch.ScriptObject).__setstate__((bad, QUALNAME))
    except ValueError:
        pass
    else:
        raise AssertionError("a truncated state was accepted")


def test_resident_memory_stays_flat():
    g = torch.Generator().manual_seed(5)
    w = make_sparse_qweight(1024, 1024, (1, 4), 0.5, True, g)
    bias = torch.randn(1024, generator=g)
    module = tsb.nn.dynamic.Linear(1024, 1024, 1, 4)
    module.set_weight_bias(w, bias, 1, 4)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    scripted_bytes = buf.getvalue()
    x = torch.randn(4, 1024, generator=g)
    xq = torch.quantize_per_tensor(x, 0.05, 120, torch.quint8)

    for _ in range(WARMUP):
        _iteration(w, bias, scripted_bytes, x, xq)
    before = _rss_mb()
    for _ in range(ITERATIONS):
        _iteration(w, bias, scripted_bytes, x, xq)
    growth = _rss_mb() - before
    print(f"leaks: {ITERATIONS} iterations after {WARMUP} warm-up, RSS {before:.1f} MB, growth {growth:+.2f} MB")
    assert growth < TOLERANCE_MB, f"resident memory grew by {growth:.1f} MB over {ITERATIONS} iterations"

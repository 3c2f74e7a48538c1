"""Thread safety: one packed weight applied from several Python threads at once,
each op also splitting its work across ATen's intra-op threads, while another
thread reads, serializes and re-plans the same object. Every result must equal,
bit for bit, the result computed beforehand on one thread."""

import os
import threading
import time

import torch

import torch_sparse_backend  # noqa: F401
from _reference import make_sparse_qweight

OPS = torch.ops.torch_sparse_backend
RUNNABLE = list(OPS._runnable_kernels())
SECONDS = float(os.environ.get("TSB_STRESS_SECONDS", "3"))
APPLY_THREADS = 4
# Batches that take the GEMV path, the 8/16/32-row batch paths and a remainder.
ROWS = (1, 8, 16, 33)


def _cases(packed, g):
    """(op, input, single-threaded result) for static and dynamic, with and without ReLU."""
    k = packed.in_features()
    cases = []
    for m in ROWS:
        x = torch.randn(m, k, generator=g) * 3
        xq = torch.quantize_per_tensor(x, 0.04, 110, torch.quint8)
        cases.append((lambda a, p: OPS.qlinear(a, p, 0.6, 90), xq))
        cases.append((lambda a, p: OPS.qlinear_relu(a, p, 0.6, 90), xq))
        cases.append((OPS.qlinear_dynamic, x))
        cases.append((OPS.qlinear_relu_dynamic, x))
    return cases


def _bits(y):
    return y.int_repr() if y.is_quantized else y.view(torch.int32)


def test_concurrent_apply_matches_single_threaded():
    g = torch.Generator().manual_seed(11)
    w = make_sparse_qweight(264, 520, (1, 4), 0.5, True, g)
    base = OPS.qlinear_prepack(w, torch.randn(264, generator=g), 1, 4)
    w8 = make_sparse_qweight(136, 300, (8, 1), 0.5, False, g)
    base8 = OPS.qlinear_prepack(w8, torch.randn(136, generator=g), 8, 1)
    weights = [OPS._with_kernel(b, k) for b in (base, base8) for k in RUNNABLE]

    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        work = []
        for packed in weights:
            for op, x in _cases(packed, g):
                work.append((op, x, packed, _bits(op(x, packed)).clone()))
        torch.set_num_threads(2)

        failures, counts = [], [0] * APPLY_THREADS
        reads = [0]
        deadline = time.monotonic() + SECONDS

        def apply(t):
            i = t
            while time.monotonic() < deadline:
                op, x, packed, expected = work[i % len(work)]
                if not torch.equal(_bits(op(x, packed)), expected):
                    failures.append((t, i % len(work)))
                counts[t] += 1
                i += 1

        def read():
            # Everything that reads the shared objects without changing them.
            while time.monotonic() < deadline:
                for packed in weights:
                    state = packed.__getstate__()
                    OPS.qlinear_unpack(packed)
                    OPS._with_kernel(packed, "reference")
                    assert state[0][1][0] == packed.out_features()
                    reads[0] += 1

        threads = [threading.Thread(target=apply, args=(t,)) for t in range(APPLY_THREADS)]
        threads.append(threading.Thread(target=read))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        torch.set_num_threads(threads_before)

    print(
        f"stress: {APPLY_THREADS} apply threads x {counts} iterations, {reads[0]} state reads, "
        f"{SECONDS:.0f} s, 2 intra-op threads"
    )
    assert not failures, f"{len(failures)} results differ from the single-threaded ones: {failures[:5]}"
    # Every thread must have gone through every case at least once.
    assert min(counts) >= len(work), counts
    assert reads[0] > 0

"""Every kernel variant this CPU runs is bit-identical to the reference kernel,
whatever the thread count; the variant can be forced by environment variable."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_sparse_backend as tsb
from _reference import make_sparse_qweight, reference_qlinear, reference_qlinear_dynamic

OPS = torch.ops.torch_sparse_backend
RUNNABLE = list(OPS._runnable_kernels())
FAST = [k for k in RUNNABLE if k != "reference"]
BLOCKS = [(1, 4), (8, 1), (4, 4), (1, 8), (16, 1), (1, 1), (2, 2), (2, 8), (16, 16)]
ROOT = Path(__file__).resolve().parent.parent


def test_machine_runs_a_fast_kernel():
    # On x86 with AVX2 and on every aarch64 CPU a vector kernel must be chosen.
    features = set(OPS._cpu_features())
    if features & {"avx2", "neon"}:
        assert FAST, f"no vector kernel runs on a CPU with {sorted(features)}"
        assert OPS._active_kernel() == FAST[0]


def _linux_cpu_flags():
    """The flags (x86) or features (aarch64) line of /proc/cpuinfo, or None off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def test_cpu_features_agree_with_the_kernel():
    # The features that select a variant, as Linux reports them for this CPU.
    flags = _linux_cpu_flags()
    if flags is None:
        pytest.fail("/proc/cpuinfo has no flags line: add this platform's feature source to the test")
    features = set(OPS._cpu_features())
    machine = os.uname().machine
    if machine in ("x86_64", "AMD64"):
        expected = set()
        if {"avx2", "fma"} <= flags:
            expected.add("avx2")
        if {"avx512f", "avx512bw", "avx512vl"} <= flags:
            expected.add("avx512bw")
            if "avx512_vnni" in flags:
                expected.add("avx512vnni")
        # Older Linux kernels do not list avx_vnni: without the flag either answer is right.
        if "avx_vnni" in flags or ("avx_vnni" in features and "avx2" in expected):
            expected.add("avx_vnni")
        # Linux lists AMX only when it manages the tile state; the plugin also
        # asks for the tile data (arch_prctl), which such a kernel grants.
        for amx in ("amx_tile", "amx_int8"):
            if amx in flags:
                expected.add(amx)
    elif machine in ("aarch64", "arm64"):
        expected = {"neon"} | ({"neon_dot"} if "asimddp" in flags else set())
    else:
        expected = features
    assert features == expected, f"_cpu_features() {sorted(features)}, /proc/cpuinfo {sorted(expected)}"


def _inputs(g, m, k, extreme):
    if extreme:
        x_int = torch.full((m, k), 255, dtype=torch.uint8)
        x = torch.full((m, k), 1e4)
        x[:, ::3] = -1e4
        return torch._make_per_tensor_quantized_tensor(x_int, 0.05, 0), x
    x = torch.randn(m, k, generator=g) * 4
    return torch.quantize_per_tensor(x, 0.03, 121, torch.quint8), x


def _extreme_weight(n, k, block, g):
    w = make_sparse_qweight(n, k, block, 0.5, True, g)
    wi = w.int_repr()
    wi[wi > 0] = 127
    wi[wi < 0] = -128
    wi[::2][wi[::2] != 0] = -127
    return torch._make_per_channel_quantized_tensor(wi, w.q_per_channel_scales(), w.q_per_channel_zero_points(), 0)


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_variant_matches_reference(kernel):
    g = torch.Generator().manual_seed(7)
    # m = 2, 10 and 34 end in two rows: the GEMV path that shares steps between rows.
    shapes = [(0, 33, 70), (1, 64, 128), (2, 40, 90), (3, 37, 61), (10, 33, 70), (17, 96, 200), (34, 20, 41), (8, 5, 3)]
    for block, (m, n, k), extreme, relu in itertools.product(BLOCKS, shapes, (False, True), (False, True)):
        w = _extreme_weight(n, k, block, g) if extreme else make_sparse_qweight(n, k, block, 0.35, extreme, g)
        bias = torch.randn(n, generator=g) * 10
        ref = OPS.qlinear_prepack(w, bias, *block)
        packed = OPS._with_kernel(ref, kernel)
        ref = OPS._with_kernel(ref, "reference")
        assert packed.kernel() == kernel and ref.kernel() == "reference"
        xq, x = _inputs(g, m, k, extreme)
        static_op = OPS.qlinear_relu if relu else OPS.qlinear
        dynamic_op = OPS.qlinear_relu_dynamic if relu else OPS.qlinear_dynamic
        ys, ys_ref = static_op(xq, packed, 7.5, 100), static_op(xq, ref, 7.5, 100)
        yd, yd_ref = dynamic_op(x, packed), dynamic_op(x, ref)
        where = f"{kernel} block={block} m,n,k={m},{n},{k} extreme={extreme} relu={relu}"
        assert torch.equal(ys.int_repr(), ys_ref.int_repr()), where
        assert torch.equal(yd.view(torch.int32), yd_ref.view(torch.int32)), where  # bit-identical
        assert torch.equal(ys.int_repr(), reference_qlinear(xq, w, bias, 7.5, 100, relu)), where
        if m:
            assert torch.equal(yd, reference_qlinear_dynamic(x, w, bias, relu)), where


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_variant_matches_reference_on_activations_below_128(kernel):
    # What torch.ao's reduce_range observers produce (x86 and fbgemm qconfigs):
    # the avx2 batches multiply such activations without sign transfer.
    g = torch.Generator().manual_seed(8)
    for block, m, extreme in itertools.product([(1, 4), (4, 4), (8, 1), (1, 1)], (2, 9, 16, 31, 40), (False, True)):
        n, k = 45, 300
        w = _extreme_weight(n, k, block, g) if extreme else make_sparse_qweight(n, k, block, 0.4, True, g)
        packed = OPS._with_kernel(OPS.qlinear_prepack(w, None, *block), kernel)
        high = 128 if extreme else torch.randint(1, 129, (), generator=g).item()
        x_int = torch.randint(0, high, (m, k), dtype=torch.uint8, generator=g)
        if extreme:
            x_int[:, ::2] = 127
        xq = torch._make_per_tensor_quantized_tensor(x_int, 0.02, 64)
        y = OPS.qlinear(xq, packed, 4.0, 90)
        assert torch.equal(y.int_repr(), reference_qlinear(xq, w, None, 4.0, 90, False)), (kernel, block, m, extreme)


def test_ops_are_built_to_use_intra_op_threads():
    # Without it at::parallel_for runs every op on the calling thread only.
    assert OPS._intra_op_parallel()
    assert tsb.info()["intra_op_threads"] == torch.get_num_threads()


@pytest.mark.parametrize("kernel", RUNNABLE)
@pytest.mark.parametrize("block", [(1, 4), (8, 1)])
@pytest.mark.parametrize("m", [1, 5, 33])
def test_results_do_not_depend_on_thread_count(kernel, block, m):
    # 1024 x 1024 at 30% density: even one row is enough work to use every thread.
    g = torch.Generator().manual_seed(8)
    w = make_sparse_qweight(1024, 1024, block, 0.3, True, g)
    b = torch.randn(1024, generator=g)
    packed = OPS._with_kernel(OPS.qlinear_prepack(w, b, *block), kernel)
    xq, x = _inputs(g, m, 1024, False)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            results.append((OPS.qlinear(xq, packed, 0.5, 128).int_repr(), OPS.qlinear_dynamic(x, packed)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], reference_qlinear(xq, w, b, 0.5, 128, False))
    for s, d in results[1:]:
        assert torch.equal(s, results[0][0])
        assert torch.equal(d.view(torch.int32), results[0][1].view(torch.int32))


def _prepack_in_child(env: dict) -> subprocess.CompletedProcess:
    """A prepack in a new process with `env`: the kernel variant is chosen at the first one."""
    code = (
        "import torch, torch_sparse_backend as t\n"
        "w = torch._make_per_tensor_quantized_tensor(torch.ones(4, 4, dtype=torch.int8), 0.1, 0)\n"
        "torch.ops.torch_sparse_backend.qlinear_prepack(w, None, 1, 4)\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)


def test_environment_variable_forces_the_kernel():
    code = "import torch_sparse_backend as t; print(t.info()['active_kernel'])"
    env = dict(os.environ, TORCH_SPARSE_BACKEND_KERNEL="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"
    env["TORCH_SPARSE_BACKEND_KERNEL"] = "no_such_kernel"
    out = _prepack_in_child(env)
    assert out.returncode != 0
    assert "TORCH_SPARSE_BACKEND_KERNEL: unknown kernel variant 'no_such_kernel'" in out.stderr


def test_amx_tiles_for_every_batch_or_a_clear_error():
    # On a CPU with AMX: the variant tests again, with the amx variant using
    # its tiles for every batch size and density (docs/amx.md). Elsewhere,
    # forcing amx is an error that says what it needs.
    if os.uname().machine not in ("x86_64", "AMD64"):
        assert "amx" not in OPS._compiled_kernels()
        return
    assert "amx" in OPS._compiled_kernels(), "the amx variant needs GCC 11 or Clang 12"
    env = dict(os.environ, TORCH_SPARSE_BACKEND_AMX_MIN_ROWS="1", TORCH_SPARSE_BACKEND_AMX_MIN_FILL="0")
    if "amx" in RUNNABLE:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
             "-k", "matches_reference and amx"],
            env=env, capture_output=True, text=True, cwd=ROOT, timeout=900,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        assert " passed" in out.stdout and " failed" not in out.stdout
        return
    env["TORCH_SPARSE_BACKEND_KERNEL"] = "amx"
    out = _prepack_in_child(env)
    assert out.returncode != 0
    assert "kernel variant 'amx' cannot run on this CPU (it needs AVX-512 VNNI, AMX-TILE and AMX-INT8" in out.stderr


@pytest.mark.parametrize("name, value", [("MIN_ROWS", "0"), ("MIN_ROWS", "16x"), ("MIN_FILL", "1.5"), ("MIN_FILL", "nan")])
def test_amx_tuning_variables_are_checked(name, value):
    if "amx" not in OPS._compiled_kernels():
        assert os.uname().machine not in ("x86_64", "AMD64"), "the amx variant needs GCC 11 or Clang 12"
        return
    env = dict(os.environ, **{f"TORCH_SPARSE_BACKEND_AMX_{name}": value})
    out = _prepack_in_child(env)
    assert out.returncode != 0
    assert f"TORCH_SPARSE_BACKEND_AMX_{name}: expected" in out.stderr


def test_sanitizer_build_is_separate_and_needs_the_asan_runtime(monkeypatch):
    from torch_sparse_backend import _extension

    monkeypatch.delenv("TORCH_SPARSE_BACKEND_SANITIZE", raising=False)
    plain = _extension.library_path()
    monkeypatch.setenv("TORCH_SPARSE_BACKEND_SANITIZE", "1")
    sanitized = _extension.library_path()
    assert sanitized.parent.parent == _extension.cache_dir() / "sanitize"
    assert sanitized.parent.name != plain.parent.name  # the flags are part of the fingerprint
    assert "-fsanitize=address,undefined" in _extension._extra_cflags()

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["TORCH_SPARSE_BACKEND_SANITIZE"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", "import torch_sparse_backend"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode != 0
    assert "AddressSanitizer runtime is not loaded" in out.stderr


def test_native_kernel_suite():
    # The torch-free kernel core, built standalone with -Werror, against the reference.
    out = subprocess.run(
        ["bash", str(ROOT / "test" / "native" / "run.sh")], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert " 0 failed" in out.stdout


def test_info_reports_the_machine():
    info = tsb.info()
    assert info["torch"] == torch.__version__
    assert info["active_kernel"] in info["runnable_kernels"]
    assert set(info["runnable_kernels"]) <= set(info["compiled_kernels"])
    assert "reference" in info["runnable_kernels"]

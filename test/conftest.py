import os
import sys
import traceback

# The test helpers (_reference.py) live next to the tests.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """Imports torch_sparse_backend before collection, with pytest's output capture off.

    The first import builds the C++ kernels; this way the build's start line (units,
    expected time), its progress and its time show on the terminal instead of
    pytest sitting silent, and a failed build stops the run once, with the
    compiler's error, instead of failing every test module's import.
    """
    import pytest

    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else _nothing():
        try:
            import torch_sparse_backend  # noqa: F401
        except Exception as e:  # ExtensionBuildError, or the ImportError that stops the package
            traceback.print_exception(e)  # the chain holds the compiler's output
            pytest.exit(f"cannot import torch_sparse_backend: {type(e).__name__}: {e}", returncode=1)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

"""Installs torch_sparse_backend with its C++ sources; the kernels build on first import."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithSources(build_py):
    """Copies csrc/ into the package, where the JIT build looks for it."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "torch_sparse_backend" / "csrc"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "csrc", target, ignore=shutil.ignore_patterns("*.o", "__pycache__"))


setup(
    name="torch_sparse_backend",
    version="0.1.0",
    description="Block-sparse int8 linear layers for torch.ao quantization on x86 and ARM CPUs",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["torch_sparse_backend", "torch_sparse_backend.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.13", "ninja"],
    cmdclass={"build_py": BuildPyWithSources},
    zip_safe=False,
)

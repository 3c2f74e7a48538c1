"""Command line: ``python -m torch_sparse_backend {demo,build,info}``."""

from __future__ import annotations

import argparse
import sys
import time


def _build() -> int:
    from torch_sparse_backend import _extension

    start = time.monotonic()
    path = _extension.load()
    print(f"torch_sparse_backend: extension ready at {path} ({time.monotonic() - start:.1f} s)")
    return 0


def _info() -> int:
    import torch_sparse_backend

    for key, value in torch_sparse_backend.info().items():
        if isinstance(value, list):
            value = ", ".join(value) if value else "(none)"
        print(f"{key:18} {value}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from torch_sparse_backend import demo

    return demo.main(sparsity=args.sparsity, block=(args.block[0], args.block[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_sparse_backend")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="prune, quantize, script and time a small model")
    demo.add_argument("--sparsity", type=float, default=0.8, help="fraction of zero blocks")
    demo.add_argument("--block", type=int, nargs=2, default=(1, 4), metavar=("ROWS", "COLS"))
    sub.add_parser("build", help="build the C++ extension now instead of at first import")
    sub.add_parser("info", help="torch version, CPU features, kernel variant, cache location")
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build()
    if args.command == "info":
        return _info()
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())

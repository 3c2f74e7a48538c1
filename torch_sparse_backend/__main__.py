"""Command line: ``python -m torch_sparse_backend {demo,build,info}``.

Arguments are parsed before anything is built: ``--help`` and ``info`` never
compile; ``build``, ``info --build`` and ``demo`` build the extension when the
cache has no build of the current sources.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch_sparse_backend


def _build() -> int:
    from torch_sparse_backend import _extension

    start = time.monotonic()
    path = _extension.load()
    print(f"torch_sparse_backend: extension ready at {path} ({time.monotonic() - start:.1f} s)")
    return 0


def _format(key: str, value: object, info: dict[str, object]) -> str:
    if key == "built":
        if value:
            return "yes"
        low, high = info["build_estimate_s"]
        return (f"no: `python -m torch_sparse_backend build` (or the first import) compiles "
                f"{info['build_units']} units, about {low}-{high} s")
    if value is None:
        return "(known once built)"
    if key == "build_estimate_s":
        return f"{value[0]}-{value[1]}"
    if isinstance(value, list):
        return ", ".join(value) if value else "(none)"
    return str(value)


def _info(build: bool) -> int:
    from torch_sparse_backend import _extension, _info

    if build:
        _extension.load()
    info = _info.info()
    for key, value in info.items():
        print(f"{key:18} {_format(key, value, info)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    torch_sparse_backend._complete_import()
    from torch_sparse_backend import demo

    return demo.main(
        sparsity=args.sparsity, block=(args.block[0], args.block[1]), batch=args.batch,
        rounds=args.rounds, threads=args.threads, max_density=args.max_density, plot_path=args.plot,
        flow=args.flow,
    )


def parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m torch_sparse_backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=formatter,
        help="prune, quantize, script and time a small model against torch's dense int8 and fp32",
        description="Prunes a 3-layer MLP, quantizes it (static and dynamic, eager and FX flows) "
                    "with torch's dense int8 modules and with ours, and times each against the other "
                    "as eager modules and as TorchScript, in turns on the same inputs.",
    )
    demo.add_argument("--sparsity", type=float, default=0.8, help="fraction of zero blocks per layer")
    demo.add_argument("--block", type=int, nargs=2, default=[1, 4], metavar=("ROWS", "COLS"),
                      help="sparse block shape")
    demo.add_argument("--batch", type=int, default=16, help="rows per timed forward call")
    demo.add_argument("--rounds", type=int, default=31,
                      help="timed rounds; each round samples every contender once, the median is kept")
    demo.add_argument("--threads", type=int, default=1, help="intra-op threads while timing")
    demo.add_argument("--max-density", type=float, default=0.5,
                      help="layers with more nonzero blocks than this stay torch's dense int8")
    demo.add_argument("--flow", choices=("torch.ao", "torchao"), default="torch.ao",
                      help="torch.ao: eager and FX torch.ao.quantization flows (TorchScript); torchao: "
                           "torchao's quantize_ and PT2E flows (torch.compile, torch.export; needs torchao)")
    demo.add_argument("--plot", metavar="PATH", default=None,
                      help="write a PNG of latency per layer and model (needs matplotlib)")
    sub.add_parser("build", formatter_class=formatter,
                   help="build the C++ extension now instead of at first import",
                   description="Builds the C++ extension into the cache (nothing to do when "
                               "a build of the current sources is there).")
    info = sub.add_parser("info", formatter_class=formatter,
                          help="torch version, CPU features, kernel variants, build and cache",
                          description="What runs here and whether the library is built. "
                                      "Builds nothing unless --build is given.")
    info.add_argument("--build", action="store_true", help="build the library first if it is not built")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "build":
        return _build()
    if args.command == "info":
        return _info(args.build)
    _check_demo_arguments(p, args)
    return _demo(args)


def _check_demo_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The demo's range checks (demo.check_arguments, repeated here so that bad
    arguments fail before anything is built)."""
    problems = []
    if not 0.0 <= args.sparsity < 1.0:
        problems.append(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if not all(b in (1, 2, 4, 8, 16) for b in args.block):
        problems.append(f"--block sizes must be from 1, 2, 4, 8, 16, got {args.block[0]} {args.block[1]}")
    for name in ("batch", "rounds", "threads"):
        if getattr(args, name) < 1:
            problems.append(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0.0 <= args.max_density <= 1.0:
        problems.append(f"--max-density must be in [0, 1], got {args.max_density}")
    if args.plot is not None and args.flow == "torchao":
        problems.append("--plot draws the torch.ao flow; the torchao flow prints a table only")
    if problems:
        p.error("; ".join(problems))


if __name__ == "__main__":
    sys.exit(main())

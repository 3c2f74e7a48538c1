"""Saves the models, input and Python outputs that run_model.cpp is checked against.

    python examples/cpp/export_models.py OUT_DIR [--aoti]

writes, into OUT_DIR:

- ``static.pt``: a scripted static model (quantize, sparse ``Linear``, sparse
  ``LinearReLU``, dequantize), float in and out;
- ``dynamic.pt``: a scripted dynamic model (sparse ``dynamic.Linear``, ReLU,
  sparse ``dynamic.LinearReLU``), float in and out;
- ``input.pt``: the input, a float tensor saved by ``torch.save``;
- ``static.expected.pt``, ``dynamic.expected.pt``: the outputs of the scripted
  models in this process;
- with ``--aoti``, ``dynamic.pt2``: the dynamic model exported and compiled by
  AOTInductor, and ``dynamic.pt2.expected.pt``, its output through
  ``torch._inductor.aoti_load_package``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.ao.nn.quantized import DeQuantize, Quantize

import torch_sparse_backend as tsb

IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 64, 96, 32, 7


def pruned_linear(in_features: int, out_features: int, block: tuple[int, int], seed: int) -> torch.nn.Linear:
    """A float ``Linear`` with about 70% of its ``block`` blocks zero, as torch.ao.pruning leaves it."""
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=g) * 0.1)
        linear.bias.copy_(torch.randn(out_features, generator=g) * 0.1)
        rows, cols = block
        keep = torch.rand(out_features // rows, in_features // cols, generator=g) < 0.3
        linear.weight.mul_(keep.repeat_interleave(rows, 0).repeat_interleave(cols, 1))
    linear.sparse_params = {"sparse_block_shape": block}
    return linear


def static_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        Quantize(0.03, 128, torch.quint8),
        tsb.nn.Linear.from_linear(pruned_linear(IN_FEATURES, HIDDEN, (1, 4), seed=1), 0.02, 120),
        tsb.nn.LinearReLU.from_linear(pruned_linear(HIDDEN, OUT_FEATURES, (8, 1), seed=2), 0.01, 0),
        DeQuantize(),
    ).eval()


def dynamic_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        tsb.nn.dynamic.Linear.from_linear(pruned_linear(IN_FEATURES, HIDDEN, (1, 4), seed=3)),
        torch.nn.ReLU(),
        tsb.nn.dynamic.LinearReLU.from_linear(pruned_linear(HIDDEN, OUT_FEATURES, (4, 4), seed=4)),
    ).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--aoti", action="store_true", help="also compile dynamic.pt2 with AOTInductor")
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    x = torch.randn(BATCH, IN_FEATURES, generator=torch.Generator().manual_seed(0))
    torch.save(x, out / "input.pt")
    for name, model in (("static", static_model()), ("dynamic", dynamic_model())):
        scripted = torch.jit.script(model)
        scripted.save(str(out / f"{name}.pt"))
        with torch.no_grad():
            torch.save(scripted(x), out / f"{name}.expected.pt")

    if args.aoti:
        model = dynamic_model()
        program = torch.export.export(model, (x,))
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(out / "dynamic.pt2"))
        with torch.no_grad():
            torch.save(torch._inductor.aoti_load_package(path)(x), out / "dynamic.pt2.expected.pt")


if __name__ == "__main__":
    main()

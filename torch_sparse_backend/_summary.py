"""``torch_sparse_backend.summary(model)``: what each linear layer of a model runs."""

from __future__ import annotations

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd

from .nn._base import SparseLinearBase

__all__ = ["summary"]

_DENSE_QUANTIZED = (nnq.Linear, nnqd.Linear, nniq.LinearReLU, nniqd.LinearReLU)


def summary(model: torch.nn.Module, print_table: bool = True) -> list[dict[str, object]]:
    """Per linear layer: name, kernel (sparse / dense / float), block shape, density,
    and weight bytes as stored vs as a dense int8 matrix. Prints a table unless
    ``print_table`` is False; returns the rows."""
    rows = []
    for name, mod in model.named_modules():
        if isinstance(mod, SparseLinearBase):
            dense_bytes = mod.in_features * mod.out_features
            rows.append(dict(
                name=name, kernel=f"sparse ({mod.kernel})", block_shape=mod.sparse_block_shape,
                density=mod.density, weight_bytes=int(mod._packed_params.packed_bytes()),
                dense_bytes=dense_bytes,
            ))
        elif isinstance(mod, _DENSE_QUANTIZED):
            w = mod.weight()
            rows.append(dict(
                name=name, kernel="dense int8 (torch)", block_shape=None,
                density=float((w.int_repr() != 0).float().mean()), weight_bytes=w.numel(),
                dense_bytes=w.numel(),
            ))
        elif isinstance(mod, torch.nn.Linear):
            w = mod.weight
            rows.append(dict(
                name=name, kernel="float", block_shape=None,
                density=float((w != 0).float().mean()), weight_bytes=w.numel() * w.element_size(),
                dense_bytes=w.numel(),
            ))
    if print_table:
        print("| layer | kernel | block | density | weight bytes | dense int8 bytes |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            block = "x".join(map(str, r["block_shape"])) if r["block_shape"] else "-"
            print(f"| {r['name']} | {r['kernel']} | {block} | {r['density']:.3f} "
                  f"| {r['weight_bytes']} | {r['dense_bytes']} |")
    return rows

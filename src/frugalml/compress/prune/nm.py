"""N:M semi-structured sparsity (e.g. 2:4): in every group of M consecutive weights along the input
dimension, keep the N largest |w|.

Groups follow the convention of NVIDIA's ASP / cuSPARSELt: along the reduction (input) dimension;
for convolutions along input channels at each kernel position (weight viewed as O, kh, kw, I).
Layers whose input width is not a multiple of M are left dense and listed in the metrics.
CPU runtimes do not exploit N:M patterns: the gain on CPU is storage size only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator
from torch.nn.utils import prune as torch_prune

from frugalml.compress.prune._layers import masked_weights, zero_metrics
from frugalml.compress.prune.api import PruneInputs, register_method
from frugalml.compress.prune.config import MaskPruneConfig
from frugalml.compress.prune.unstructured import bake_masks, remember_order
from frugalml.errors import UnsupportedError

CPU_NOTE = "N:M sparsity is not exploited by CPU runtimes: latency is unchanged, only size falls"


class NMPrune(MaskPruneConfig):
    """N:M sparsity: keep the `n` largest of every `m` consecutive input weights (2:4 by default).

    2:4 is what sparse tensor cores accelerate; on CPU only the artifact shrinks."""

    method: Literal["nm"] = "nm"
    n: int = Field(2, ge=1, description="weights kept in each group")
    m: int = Field(4, ge=2, description="group length along the input dimension")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMPrune:
        if self.n >= self.m:
            raise ValueError(f"N:M needs n < m (got n={self.n}, m={self.m}); e.g. n: 2, m: 4")
        return self


@register_method(NMPrune)
def prune_nm(model: nn.Module, cfg: NMPrune, inputs: PruneInputs) -> tuple[nn.Module, dict]:
    masked, skipped = apply_nm_masks(masked_weights(model, cfg.targets, cfg.ignore), cfg.n, cfg.m)
    if not masked:
        raise UnsupportedError(
            f"prune method nm: no selected layer has an input width divisible by m={cfg.m}; "
            f"skipped: {', '.join(skipped[:8])}"
        )
    ft = inputs.finetune(model, cfg.finetune)
    bake_masks(masked)
    metrics = {"pattern": f"{cfg.n}:{cfg.m}", "dense_layers": skipped, "note": CPU_NOTE, "latency_note": CPU_NOTE}
    return model, {**metrics, **zero_metrics(model, masked), "finetune": ft}


def _grouped_view(w: torch.Tensor, m: int) -> torch.Tensor | None:
    """(rows, groups, m) view of the weight in grouping order, or None if it does not divide."""
    if w.dim() > 2:  # conv (O, I, *k) -> (O, *k, I)
        w = w.movedim(1, -1)
    if w.shape[-1] % m:
        return None
    return w.reshape(-1, w.shape[-1] // m, m)


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor | None:
    """0/1 mask with exactly n ones per group of m (largest magnitudes), same shape as w."""
    grouped = _grouped_view(w.detach().abs(), m)
    if grouped is None:
        return None
    keep = torch.zeros_like(grouped)
    keep.scatter_(-1, torch.topk(grouped, n, dim=-1).indices, 1.0)
    if w.dim() > 2:
        moved = w.movedim(1, -1).shape
        return keep.reshape(moved).movedim(-1, 1).contiguous()
    return keep.reshape(w.shape)


def apply_nm_masks(params: list[tuple[str, nn.Module, str]], n: int, m: int) -> tuple[list, list[str]]:
    """Attach N:M masks (torch.nn.utils.prune.custom_from_mask). Returns (masked, skipped names)."""
    masked, skipped = [], []
    for name, mod, pname in params:
        mask = nm_mask(getattr(mod, pname), n, m)
        if mask is None:
            skipped.append(f"{name}.{pname}")
            continue
        remember_order(mod)
        torch_prune.custom_from_mask(mod, pname, mask)
        masked.append((name, mod, pname))
    return masked, skipped


def check_nm(w: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m has at most n nonzeros (the hardware constraint)."""
    grouped = _grouped_view(w, m)
    return grouped is not None and bool(((grouped != 0).sum(-1) <= n).all())

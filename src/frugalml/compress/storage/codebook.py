"""Weight sharing (Deep Compression, Han et al. 2016): k-means codebooks and centroid fine-tuning.

``kmeans_codebook`` clusters a weight's unpruned entries into 2**bits centroids, initialised linearly
between their min and max (the paper found linear init keeps the rare large weights, which matter most,
better than density-based init). Pruned entries are not clustered and stay exactly zero.

``apply_codebooks`` puts a :class:`CodebookWeight` parametrization on each chosen weight: the module's
trainable parameter becomes the codebook (``module.parametrizations.weight.original``, 2**bits values)
and ``weight = where(mask, codebook[assignments], 0)``, so any ordinary training loop fine-tunes the
centroids. A centroid moves by the *mean* of the gradients of the weights sharing it, not their sum
(the paper's update): with the sum a step grows with the cluster's population, so no one learning rate
suits every layer and sparsity. On the Fashion-MNIST CNN at lr 0.01, 6-bit codebooks on the dense
model (~860 weights per centroid in its largest conv) diverged to 10% accuracy with the sum (a size
search lost 45-84 points on 4 of its 5 codebook trials) and kept 93.15% with the mean; 5-bit codebooks
on the 90%-sparse model reached 91.60% (sum) and 92.05% (mean) after 300 steps (BENCHMARKS.md).
``bake_codebooks`` turns the modules back into plain ones whose weights hold at most 2**bits distinct
nonzero values; :func:`encode_tensor` then stores them as n-bit codes plus the codebook without being
told.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from frugalml.errors import ConfigError

BITS = range(2, 9)


def _cluster_means(
    values: torch.Tensor, assignments: torch.Tensor, k: int, empty: torch.Tensor
) -> torch.Tensor:
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assignments.long(), values.double())
    counts = torch.bincount(assignments.long(), minlength=k)
    return torch.where(counts > 0, sums / counts.clamp(min=1), empty.double())


def kmeans_codebook(
    weight: torch.Tensor, bits: int, mask: torch.Tensor | None = None, max_iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``weight[mask]`` (default mask: ``weight != 0``) into 2**bits centroids by 1-D Lloyd.

    Returns the codebook (2**bits values, ascending, weight's dtype) and the assignments (int32, the
    weight's shape; 0 where the mask is off), so ``where(mask, codebook[assignments], 0)`` rebuilds it.
    A centroid no value chose keeps its linear initial value.
    """
    if bits not in BITS:
        raise ValueError(f"codebook of {bits} bits; supported: {BITS.start}..{BITS.stop - 1}")
    weight = weight.detach()
    mask = weight != 0 if mask is None else mask.to(torch.bool)
    k = 1 << bits
    values = weight[mask].double()
    assignments = torch.zeros(weight.shape, dtype=torch.int32)
    if values.numel() == 0:
        return torch.zeros(k, dtype=weight.dtype), assignments
    # Lloyd on sorted values: a centroid's cell is a run between midpoints, its sum a prefix-sum difference
    ordered = values.sort().values
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), ordered.cumsum(0)])
    centroids = torch.linspace(float(ordered[0]), float(ordered[-1]), k, dtype=torch.float64)
    cuts = None
    for _ in range(max_iters):
        inner = torch.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2, right=True)
        new = torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([ordered.numel()])])
        if cuts is not None and torch.equal(new, cuts):
            break
        cuts = new
        counts = cuts.diff()
        means = (prefix[cuts[1:]] - prefix[cuts[:-1]]) / counts.clamp(min=1)
        centroids = torch.where(counts > 0, means, centroids)
    # bucketize puts a value equal to a midpoint in the lower cell, as searchsorted(right=True) did
    assignments[mask] = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2).to(torch.int32)
    return centroids.to(weight.dtype), assignments


class CodebookWeight(nn.Module):
    """Parametrization ``weight = where(mask, codebook[assignments], 0)``; the codebook is what is trained.

    Register with ``parametrize.register_parametrization(module, "weight", p, unsafe=True)``:
    :meth:`right_inverse` turns the current weight into the codebook (each centroid the mean of its
    cluster's weights), which torch then keeps as ``module.parametrizations.weight.original``.
    """

    def __init__(self, assignments: torch.Tensor, mask: torch.Tensor, codebook: torch.Tensor):
        super().__init__()
        self.register_buffer("assignments", assignments.to(torch.int32))
        self.register_buffer("mask", mask.to(torch.bool))
        self.register_buffer("initial", codebook.detach().clone())  # for centroids no weight chose
        counts = torch.bincount(assignments[mask].long(), minlength=codebook.numel()).clamp(min=1)
        # 1 / weights per centroid; derived, so not saved (checkpoints of earlier versions still load)
        self.register_buffer("share", 1.0 / counts.to(torch.float32), persistent=False)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        # exactly the same values (y - y is 0), with each centroid's gradient scaled by 1/population
        scaled = codebook * self.share.to(codebook.dtype)
        codebook = codebook.detach() + (scaled - scaled.detach())
        return torch.where(self.mask, codebook[self.assignments], 0.0)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        means = _cluster_means(
            weight.detach()[self.mask], self.assignments[self.mask], self.initial.numel(), self.initial
        )
        return means.to(weight.dtype)


def _targets(model: nn.Module, bits: int | Mapping[str, int]) -> dict[str, tuple[nn.Module, int]]:
    modules = dict(model.named_modules())
    if isinstance(bits, int):
        return {name: (m, bits) for name, m in modules.items()
                if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2}  # fmt: skip
    unknown = sorted(set(bits) - set(modules))
    if unknown:
        raise ConfigError(
            f"no module named {unknown[0]!r} to put a codebook on; modules: {', '.join(list(modules)[1:9])}…"
        )
    return {name: (modules[name], b) for name, b in bits.items()}


def apply_codebooks(model: nn.Module, bits: int | Mapping[str, int], max_iters: int = 100) -> nn.Module:
    """Share weights in place: k-means each chosen weight, parametrize it by its codebook; returns `model`.

    bits: one width (2..8) for every module with a weight of 2+ dims (Linear, Conv), or
    ``{module_name: bits}``. Zeros (pruned weights) stay zero through fine-tuning.
    """
    for name, (module, b) in _targets(model, bits).items():
        if b not in BITS:
            raise ConfigError(f"codebook bits for {name!r} is {b}; choose {BITS.start}..{BITS.stop - 1}")
        if hasattr(module, "weight_orig") or parametrize.is_parametrized(module, "weight"):
            raise ConfigError(f"{name!r}.weight is already masked or parametrized; bake pruning first "
                              "(torch.nn.utils.prune.remove) and apply codebooks once")  # fmt: skip
        weight = module.weight.detach()
        mask = weight != 0
        codebook, assignments = kmeans_codebook(weight, b, mask, max_iters)
        parametrize.register_parametrization(
            module, "weight", CodebookWeight(assignments, mask, codebook), unsafe=True
        )
    return model


def bake_codebooks(model: nn.Module) -> nn.Module:
    """Replace every codebook parametrization by the plain weight it computes; returns `model`."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, CodebookWeight) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model

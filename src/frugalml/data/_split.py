"""Deterministic stratified splitting: same labels + same seed -> same indices, on every machine."""

from __future__ import annotations

import numpy as np


def allocate(counts: np.ndarray, n_take: int) -> np.ndarray:
    """Split `n_take` over classes proportionally to `counts` (largest remainder, exact total)."""
    total = int(counts.sum())
    n_take = max(0, min(int(n_take), total))
    if total == 0:
        return np.zeros_like(counts)
    quota = counts.astype(np.float64) * n_take / total
    take = np.floor(quota).astype(np.int64)
    short = n_take - int(take.sum())
    if short > 0:
        # ties broken by class index (stable sort) so the allocation never depends on the platform
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:short]] += 1
    return np.minimum(take, counts)


def stratified_take(y: np.ndarray, n_take: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick `n_take` indices with the class proportions of `y`; return (taken, rest), each shuffled."""
    classes, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    per_class = allocate(counts, n_take)
    taken, rest = [], []
    for c, k in enumerate(per_class):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        taken.append(idx[:k])
        rest.append(idx[k:])
    # shuffle the concatenation so a split is never grouped by class (folders arrive sorted by class)
    taken_idx = rng.permutation(np.concatenate(taken)) if taken else np.zeros(0, np.int64)
    rest_idx = rng.permutation(np.concatenate(rest)) if rest else np.zeros(0, np.int64)
    return taken_idx.astype(np.int64), rest_idx.astype(np.int64)


def split_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so e.g. changing `limit` never moves the val split."""
    streams = {"test": 1, "val": 2, "limit": 3}
    return np.random.default_rng([int(seed) % (1 << 64), streams[purpose]])

"""Few labels: keep N labels per class of the training split, and flip labels on purpose.

`data.labels_per_class: N` picks exactly N training samples of every class (seeded, independent of
every other split) and moves the rest of the training split into the unlabelled pool
(`bundle.x_unlabelled`). The pool's true labels stay in `bundle.y_unlabelled` only so that
pseudo-label precision and auto-labelling precision can be *measured*; no training code reads them.
Normalization statistics come from the whole training split before it is divided (they use images,
not labels), so every label budget sees identical inputs.

`data.label_noise: f` flips a fraction f of the (labelled) training labels to a different class,
uniformly at random and seeded; the true labels stay in `bundle.y_train_true` for measuring how many
flips a label-issue finder recovers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from frugalml.data.bundle import DataBundle
from frugalml.data.config import DataConfig
from frugalml.errors import DataError

# independent random streams (frugalml.data._split uses 1..3 for test/val/limit)
_LABELS_STREAM = 11
_NOISE_STREAM = 12


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (1 << 64), stream])


def few_label_split(y: np.ndarray, per_class: int, seed: int, class_names: list[str] | None = None,
                    where: str = "data.labels_per_class") -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled) indices into `y`: exactly `per_class` of each class in labelled, both
    shuffled. A class with fewer samples than asked is one DataError naming it."""
    y = np.asarray(y)
    num_classes = len(class_names) if class_names else int(y.max()) + 1 if len(y) else 0
    counts = np.bincount(y, minlength=num_classes)
    short = int(np.argmin(counts)) if num_classes else 0
    if num_classes == 0 or counts[short] < per_class:
        name = class_names[short] if class_names else str(short)
        have = int(counts[short]) if num_classes else 0
        raise DataError(
            f"{where}: {per_class} labels per class asked, but class {name!r} has only {have} training "
            f"samples; ask for at most {have}"
        )
    rng = _rng(seed, _LABELS_STREAM)
    labelled = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(num_classes)]
    taken = np.concatenate(labelled)
    rest = np.setdiff1d(np.arange(len(y)), taken, assume_unique=True)
    return rng.permutation(taken).astype(np.int64), rng.permutation(rest).astype(np.int64)


def flip_labels(y: torch.Tensor, fraction: float, num_classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """A copy of `y` with round(fraction * N) labels moved to another class, and the flipped indices."""
    rng = _rng(seed, _NOISE_STREAM)
    n = int(round(fraction * len(y)))
    idx = np.sort(rng.choice(len(y), size=n, replace=False)) if n else np.zeros(0, np.int64)
    noisy = y.clone()
    if n and num_classes > 1:
        shift = torch.from_numpy(rng.integers(1, num_classes, size=n))  # never the same class
        noisy[idx] = (y[idx] + shift) % num_classes
    return noisy, idx


def apply_label_options(bundle: DataBundle, cfg: DataConfig) -> DataBundle:
    """The bundle with `cfg.labels_per_class` and `cfg.label_noise` applied (unchanged when unset)."""
    if cfg.labels_per_class is not None:
        keep, pool = few_label_split(bundle.y_train.numpy(), cfg.labels_per_class, cfg.seed, bundle.class_names)
        keep_t, pool_t = torch.from_numpy(keep), torch.from_numpy(pool)
        bundle = dataclasses.replace(
            bundle, x_train=bundle.x_train[keep_t], y_train=bundle.y_train[keep_t],
            x_unlabelled=bundle.x_train[pool_t], y_unlabelled=bundle.y_train[pool_t],
        )
    if cfg.label_noise > 0:
        noisy, _ = flip_labels(bundle.y_train, cfg.label_noise, bundle.num_classes, cfg.seed)
        bundle = dataclasses.replace(bundle, y_train=noisy, y_train_true=bundle.y_train)
    return bundle


def labelled_count(bundle: DataBundle) -> int:
    """Labels a method trained with: the size of the (labelled) training split."""
    return len(bundle.y_train)

"""`load_data`: spec -> source -> stratified splits -> limit -> normalization -> DataBundle."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

# sources register themselves on import; a new source is one module + one import line here
from frugalml.data import digits, fashion_mnist, folder, idx, synthetic, text  # noqa: F401
from frugalml.data._source import DATASETS, RawDataset
from frugalml.data._split import split_rng, stratified_take
from frugalml.data.bundle import DataBundle
from frugalml.data.config import DataConfig
from frugalml.data.fewlabel import apply_label_options
from frugalml.errors import DataError

TEST_FRACTION = 0.2  # for sources without an official test split


def list_datasets() -> list[tuple[str, str]]:
    """(name, description) of every registered source; the description starts with its usage."""
    return [(name, f"{src.usage}: {src.description}") for name, src in DATASETS.items()]


def load_data(cfg: DataConfig | str) -> DataBundle:
    """Load a dataset spec into normalized float32 train/val/test tensors.

    - test: the official test split, or a stratified TEST_FRACTION of the data (from `seed`);
    - val: a stratified `val_fraction` of train (from `seed`; independent of `limit`);
    - `limit`: train is capped (stratified) and val is capped in the same proportion;
    - `normalize`: (x - mean) / std with scalar mean/std computed on the final train split only.
    """
    if isinstance(cfg, str):
        cfg = DataConfig.checked("data", name=cfg)
    prefix, _, arg = cfg.name.partition(":")
    source = DATASETS.get(prefix)
    raw = source.load(cfg, arg or None)
    if isinstance(raw, text.RawText):  # text corpora: split, then tokenized into named tensors
        return text.load_text(raw, cfg)
    _check_raw(raw, cfg.name)

    if raw.x_test is None or raw.y_test is None:
        n_test = int(round(TEST_FRACTION * len(raw.y_train)))
        test_idx, pool_idx = stratified_take(raw.y_train, n_test, split_rng(cfg.seed, "test"))
        x_pool, y_pool = raw.x_train[pool_idx], raw.y_train[pool_idx]
        x_test, y_test = raw.x_train[test_idx], raw.y_train[test_idx]
    else:
        x_pool, y_pool, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test

    n_val = int(round(cfg.val_fraction * len(y_pool)))
    val_idx, train_idx = stratified_take(y_pool, n_val, split_rng(cfg.seed, "val"))
    if cfg.limit is not None and cfg.limit < len(train_idx):
        rng = split_rng(cfg.seed, "limit")
        keep, _ = stratified_take(y_pool[train_idx], cfg.limit, rng)
        train_idx = train_idx[keep]
        # a quick run should not spend its time evaluating a full-size val split
        n_val_cap = int(round(cfg.limit * cfg.val_fraction / (1.0 - cfg.val_fraction)))
        if n_val_cap < len(val_idx):
            keep_val, _ = stratified_take(y_pool[val_idx], n_val_cap, rng)
            val_idx = val_idx[keep_val]

    x_train = _to_float(x_pool[train_idx], raw.scale)
    x_val = _to_float(x_pool[val_idx], raw.scale)
    x_test_t = _to_float(x_test, raw.scale)
    mean, std = 0.0, 1.0
    if cfg.normalize and len(x_train):
        var, mu = torch.var_mean(x_train, correction=0)
        mean, std = float(mu), float(var.sqrt())
        std = std if std > 1e-12 else 1.0  # a constant image set would otherwise divide by zero
        for x in (x_train, x_val, x_test_t):
            x.sub_(mean).div_(std)

    bundle = DataBundle(
        name=cfg.name,
        x_train=x_train,
        y_train=torch.from_numpy(np.ascontiguousarray(y_pool[train_idx], dtype=np.int64)),
        x_val=x_val,
        y_val=torch.from_numpy(np.ascontiguousarray(y_pool[val_idx], dtype=np.int64)),
        x_test=x_test_t,
        y_test=torch.from_numpy(np.array(y_test, dtype=np.int64)),
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        mean=mean,
        std=std,
    )
    bundle = apply_label_options(bundle, cfg)  # data.labels_per_class, data.label_noise
    if cfg.task not in (None, "classification"):  # judged against the run's first model, not the labels
        bundle = reference_task(bundle, cfg.task)
    return bundle


def reference_task(bundle: DataBundle, task: str) -> DataBundle:
    """The same inputs with a reference-based task (embedding, regression): y becomes (N, 0) until the
    run's first model fills it with its outputs (frugalml.measure.task.bind_reference)."""
    empty = {f"y_{w}": torch.zeros(len(getattr(bundle, f"y_{w}")), 0) for w in ("train", "val", "test")}
    return dataclasses.replace(bundle, **empty, task=task, num_classes=0, class_names=[])


def _to_float(x: np.ndarray, scale: float) -> torch.Tensor:
    """float32 copy in [0, 1]; the copy is what makes in-place normalization safe for cached sources."""
    t = torch.from_numpy(np.array(x, dtype=np.float32))
    return t.div_(scale) if scale != 1.0 else t


def _check_raw(raw: RawDataset, spec: str) -> None:
    """Programmer errors in a source (wrong shapes/labels) surface here, not deep in training."""
    pairs = [("train", raw.x_train, raw.y_train)]
    if raw.x_test is not None and raw.y_test is not None:
        pairs.append(("test", raw.x_test, raw.y_test))
    for split, x, y in pairs:
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"dataset {spec!r}: {split} x {x.shape} / y {y.shape} are not (N,C,H,W) / (N,)")
        if len(y) and (y.min() < 0 or y.max() >= len(raw.class_names)):
            raise DataError(
                f"dataset {spec!r}: {split} labels span {int(y.min())}..{int(y.max())}, "
                f"but there are {len(raw.class_names)} classes"
            )
    if len(raw.y_train) == 0:
        raise DataError(f"dataset {spec!r}: no training samples")

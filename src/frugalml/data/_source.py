"""What a dataset source returns, and the registry sources join with one decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from frugalml.data.config import DataConfig
from frugalml.errors import ConfigError
from frugalml.registry import Registry


@dataclass
class RawDataset:
    """Un-normalized arrays as a source read them: x is (N, C, H, W), y is int64 (N,).

    x may stay in its compact source dtype (uint8 for images) so that splitting copies bytes, not
    floats; `scale` is what x is divided by to land in [0, 1]. `x_test`/`y_test` are None when the
    source has no official test split (one is then carved out of train, stratified, from the seed).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    scale: float = 1.0


Loader = Callable[[DataConfig, "str | None"], RawDataset]


@dataclass(frozen=True)
class DatasetSource:
    """A registered source: `load(cfg, arg)` where `arg` is the part of the spec after `prefix:`."""

    name: str
    usage: str
    description: str
    takes_path: bool
    load: Loader


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(name: str, *, takes_path: bool = False) -> Callable[[Loader], Loader]:
    """Register `fn(cfg, arg) -> RawDataset` as spec `name` (or `name:DIR` when `takes_path`).

    The first line of the function's docstring is the description `list_datasets()` shows.
    """

    def deco(fn: Loader) -> Loader:
        doc = (fn.__doc__ or "").strip().splitlines()
        usage = f"{name}:DIR" if takes_path else name
        DATASETS.register(name, DatasetSource(name, usage, doc[0] if doc else "", takes_path, fn))
        return fn

    return deco


def resolve_dir(spec_name: str, arg: str | None, cfg: DataConfig) -> str:
    """The directory a path-taking source reads: the spec's `:DIR`, else `root`."""
    path = arg or cfg.root
    if not path:
        raise ConfigError(
            f"dataset {spec_name!r} needs a directory: write '{spec_name}:DIR' or set data.root"
        )
    return path

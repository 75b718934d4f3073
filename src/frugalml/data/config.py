"""The `data:` section of a recipe; the same class is the Python API of `load_data`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from frugalml.config import NamedConfig


class DataConfig(NamedConfig):
    """Which dataset to load and how to split, cap and normalize it.

    `name` is a spec: `digits`, `fashion-mnist`, `idx:DIR`, `folder:DIR` or `synthetic`
    (see `frugalml.data.list_datasets()`). The split seed only changes which samples land in
    val/test/limit; the data itself (synthetic included) is the same for every seed.
    """

    name: str = "digits"
    root: str | None = None  # directory for fashion-mnist (or idx:/folder: when no DIR is given)
    image_size: int | None = Field(default=None, ge=1)  # folder datasets; default 32
    channels: Literal[1, 3] | None = None  # folder datasets: 1 (grayscale) or 3 (RGB); default 3
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    normalize: bool = True
    limit: int | None = Field(default=None, ge=1)  # cap on train samples, for quick runs
    synthetic_samples: int = Field(default=512, ge=2)
    synthetic_classes: int = Field(default=4, ge=2)
    synthetic_shape: tuple[int, int, int] = (1, 8, 8)

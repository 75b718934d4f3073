"""scikit-learn's bundled handwritten digits: 1797 8x8 grayscale images, 10 classes, no download."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from frugalml.data._source import RawDataset, register_dataset
from frugalml.data.config import DataConfig
from frugalml.errors import ConfigError


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # cached because tests and pipelines load it many times; read-only so no caller can corrupt it
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # pixel values are integers 0..16
    y = d.target.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@register_dataset("digits")
def load_digits_dataset(cfg: DataConfig, arg: str | None) -> RawDataset:
    """scikit-learn handwritten digits (1x8x8, 10 classes, 1797 samples; test = 20% stratified)."""
    if arg:
        raise ConfigError(f"dataset 'digits' takes no ':{arg}'")
    x, y = _digits_arrays()
    return RawDataset(x, y, None, None, [str(i) for i in range(10)], scale=16.0)

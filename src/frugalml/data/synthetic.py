"""Generated classification data: one smooth random pattern per class, plus noise.

Fixed generator seed: like a real dataset, the data is the same for every split seed. A tiny model
learns it well above chance in a few epochs, but the noise keeps it from being trivially separable.
"""

from __future__ import annotations

import numpy as np

from frugalml.data._source import RawDataset, register_dataset
from frugalml.data.config import DataConfig
from frugalml.errors import ConfigError

GENERATOR_SEED = 1234
SIGNAL = 0.5  # class-pattern amplitude against unit-std pixel noise, for 64 pixels (scaled by size)


def _smooth(a: np.ndarray) -> np.ndarray:
    """3x3 box blur over the last two axes (edge-padded), so patterns look like images, not static."""
    h, w = a.shape[-2:]
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    return sum(p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def make_synthetic(samples: int, classes: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, C, H, W) in [0, 1], y int64) with balanced classes in shuffled order."""
    rng = np.random.default_rng(GENERATOR_SEED)
    patterns = _smooth(rng.standard_normal((classes, *shape)))
    patterns = (patterns - patterns.mean(axis=(1, 2, 3), keepdims=True)) / (
        patterns.std(axis=(1, 2, 3), keepdims=True) + 1e-8
    )
    y = rng.permutation(np.arange(samples) % classes).astype(np.int64)
    # per-sample contrast varies so the model must learn the pattern, not a fixed pixel value
    contrast = rng.uniform(0.5, 1.5, size=(samples, 1, 1, 1))
    # a linear read-out sees the pattern with SNR ~ amplitude * sqrt(pixels), so the amplitude shrinks
    # with size to keep the task equally hard (not trivially separable) at any shape
    amplitude = SIGNAL * np.sqrt(64.0 / np.prod(shape))
    x = amplitude * contrast * patterns[y] + rng.standard_normal((samples, *shape))
    x = np.clip(0.5 + 0.15 * x, 0.0, 1.0)
    return x.astype(np.float32), y


@register_dataset("synthetic")
def load_synthetic(cfg: DataConfig, arg: str | None) -> RawDataset:
    """Generated class patterns + noise (synthetic_samples/classes/shape; default 512, 4, 1x8x8)."""
    if arg:
        raise ConfigError(f"dataset 'synthetic' takes no ':{arg}'; use data.synthetic_* fields")
    if any(d < 1 for d in cfg.synthetic_shape):
        raise ConfigError(
            f"data.synthetic_shape must be 3 positive ints (C, H, W), got {cfg.synthetic_shape}"
        )
    x, y = make_synthetic(cfg.synthetic_samples, cfg.synthetic_classes, tuple(cfg.synthetic_shape))
    return RawDataset(x, y, None, None, [f"class{i}" for i in range(cfg.synthetic_classes)], scale=1.0)

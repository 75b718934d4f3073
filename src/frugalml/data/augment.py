"""Batch augmentation with plain torch ops: random crop, horizontal flip, cutout, Gaussian noise.

Everything works on whole batches (N, C, H, W) at once — per-sample randomness comes from tensors of
offsets/masks, never from a Python loop over samples — so it costs little next to a training step on
CPU. Randomness comes only from the augmenter's own `torch.Generator`, so a seed gives the same
augmented batches every run, and `state_dict()` lets the trainer checkpoint it for exact resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from frugalml.config import Config


class AugmentConfig(Config):
    """Training-time augmentation, applied to each training batch (never to val/test)."""

    crop_padding: int = Field(
        0, ge=0, description="random crop: pad each side by this many pixels, crop back at a random offset"
    )
    hflip: bool = Field(False, description="flip each image left-right with probability 0.5")
    cutout: int = Field(0, ge=0, description="side of a square set to 0 (the mean) at a random place; 0 = off")
    noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added in normalized units; 0 = off")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.cutout or self.noise)


class Augment:
    """`(x, y) -> (x, y)` batch transform; labels pass through unchanged."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0, *, fill: float = 0.0) -> None:
        self.cfg = cfg
        # value of a black pixel after normalization, so crop borders look like image background
        self.fill = float(fill)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"augmentation expects images (N, C, H, W), got shape {tuple(x.shape)}")
        cfg = self.cfg
        if cfg.crop_padding:
            x = self.random_crop(x, cfg.crop_padding)
        if cfg.hflip:
            flip = torch.rand(x.shape[0], generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if cfg.cutout:
            x = self.cutout(x, cfg.cutout)
        if cfg.noise:
            x = x + cfg.noise * torch.randn(x.shape, generator=self.generator, dtype=x.dtype)
        return x, y

    def random_crop(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), value=self.fill)
        wp = w + 2 * pad
        top = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=self.generator)
        left = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=self.generator)
        rows = top + torch.arange(h).view(1, h, 1)
        cols = left + torch.arange(w).view(1, 1, w)
        # one flat spatial index per output pixel, shared by all channels of a sample
        flat = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)

    def cutout(self, x: torch.Tensor, size: int) -> torch.Tensor:
        n, _, h, w = x.shape
        cy = torch.randint(0, h, (n, 1, 1), generator=self.generator)
        cx = torch.randint(0, w, (n, 1, 1), generator=self.generator)
        rows = torch.arange(h).view(1, h, 1) - (cy - size // 2)
        cols = torch.arange(w).view(1, 1, w) - (cx - size // 2)
        hole = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)  # clipped at the border
        return x.masked_fill(hole[:, None], 0.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def make_augment(cfg: AugmentConfig | dict, seed: int = 0, *, fill: float = 0.0) -> Augment:
    """Build the batch transform for `cfg`; `fill` is the padding value used by random crop."""
    if isinstance(cfg, dict):
        cfg = AugmentConfig(**cfg)
    return Augment(cfg, seed, fill=fill)

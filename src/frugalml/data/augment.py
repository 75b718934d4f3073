"""Batch augmentation with plain torch ops, per-sample random parameters, on CPU or GPU.

Pixel ops: random crop with padding, flips, cutout, random erasing, Gaussian noise. Geometric ops
(rotation, scale, translation, shear) are one affine matrix per sample and one `grid_sample` for the
batch. RandAugment / TrivialAugment pick an op and a magnitude per sample (`_augment_ops.py`).
MixUp / CutMix mix pairs within the batch and return soft (N, C) targets, which the Trainer's
cross-entropy takes as they are: that is the matching loss, lam * CE(a) + (1 - lam) * CE(b).

No Python loop runs over samples; randomness comes only from the augmenter's own `torch.Generator`,
so a seed gives the same batches on every run, and `state_dict()` lets the trainer checkpoint it for
an exact resume. Named pipelines `weak` and `strong` (`AugmentConfig.preset`) are what the
semi-supervised methods use; a recipe may write `augment: strong`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from frugalml.config import Config
from frugalml.data._augment_ops import affine_matrices, apply_affine, rand_augment, unit_range

PRESETS: dict[str, dict[str, Any]] = {
    # FixMatch's weak view: flip and shift by up to 12.5% of the image
    "weak": {"hflip": True, "translate": 0.125},
    # FixMatch's strong view: the weak one + two RandAugment ops of random magnitude + an erased patch
    "strong": {"hflip": True, "translate": 0.125, "randaugment": 2, "magnitude": None, "erasing": 1.0},
}


class AugmentConfig(Config):
    """Training-time augmentation, applied to each training batch (never to val/test).

    A string is a named pipeline: `weak` or `strong` (see PRESETS)."""

    crop_padding: int = Field(
        0, ge=0, description="random crop: pad each side by this many pixels, crop back at a random offset"
    )
    hflip: bool = Field(False, description="flip each image left-right with probability 0.5")
    vflip: bool = Field(False, description="flip each image upside down with probability 0.5")
    rotate: float = Field(0.0, ge=0, le=180, description="rotate by a uniform angle in [-rotate, rotate] degrees")
    scale: tuple[float, float] | None = Field(None, description="zoom by a uniform factor in [lo, hi], e.g. [0.9, 1.1]")
    translate: float = Field(0.0, ge=0, lt=1, description="shift by up to this fraction of the size, each axis")
    shear: float = Field(0.0, ge=0, lt=90, description="shear by a uniform angle in [-shear, shear] degrees")
    randaugment: int = Field(0, ge=0, le=8, description="RandAugment: ops applied per sample; 0 = off")
    magnitude: int | None = Field(9, ge=0, le=30, description="RandAugment magnitude 0..30; null = random per op")
    trivialaugment: bool = Field(False, description="TrivialAugment: one op of random magnitude per sample")
    cutout: int = Field(0, ge=0, description="side of a square set to 0 (the mean) at a random place; 0 = off")
    erasing: float = Field(0.0, ge=0, le=1, description="random erasing: probability per sample of a 2-33% patch")
    noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added in normalized units; 0 = off")
    mixup: float = Field(0.0, ge=0, description="MixUp Beta(alpha, alpha); 0 = off")
    cutmix: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 = off (with mixup: one of them per batch)")

    @model_validator(mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"unknown augmentation pipeline {value!r}; allowed: {', '.join(PRESETS)}")
            return dict(PRESETS[value])
        return value

    @model_validator(mode="after")
    def _scale_range(self) -> AugmentConfig:
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [lo, hi] with 0 < lo <= hi, got {list(self.scale)}")
        return self

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        return cls.model_validate(name)

    @property
    def geometric(self) -> bool:
        return bool(self.rotate or self.scale or self.translate or self.shear)

    @property
    def mixes(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @property
    def active(self) -> bool:
        return bool(
            self.crop_padding or self.hflip or self.vflip or self.geometric or self.randaugment
            or self.trivialaugment or self.cutout or self.erasing or self.noise or self.mixes
        )


class Augment:
    """`(x, y) -> (x, y)` batch transform. Labels pass through unchanged unless MixUp/CutMix is on,
    which turns them into soft (N, num_classes) targets."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0, *, fill: float = 0.0, num_classes: int | None = None,
                 value_range: tuple[float, float] | None = None) -> None:
        if cfg.mixes and not num_classes:
            raise ValueError("MixUp/CutMix need num_classes to build soft targets")
        self.cfg = cfg
        # value of a black pixel after normalization, so crop borders look like image background
        self.fill = float(fill)
        self.num_classes = num_classes
        # pixel values of black and white after normalization; None: each image's own min and max
        self.value_range = value_range
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"augmentation expects images (N, C, H, W), got shape {tuple(x.shape)}")
        cfg, g = self.cfg, self.generator
        if cfg.crop_padding:
            x = self.random_crop(x, cfg.crop_padding)
        if cfg.hflip:
            x = torch.where(self._coin(x, 0.5), x.flip(-1), x)
        if cfg.vflip:
            x = torch.where(self._coin(x, 0.5), x.flip(-2), x)
        if cfg.geometric:
            theta = affine_matrices(x.shape[0], g, rotate=cfg.rotate, scale=cfg.scale, translate=cfg.translate,
                                    shear=cfg.shear)
            x = apply_affine(x, theta, self.fill)
        if cfg.randaugment or cfg.trivialaugment:
            n_ops = 1 if cfg.trivialaugment else cfg.randaugment
            magnitude = None if cfg.trivialaugment else cfg.magnitude
            lo, hi = unit_range(x, self.value_range)
            x = rand_augment(x, g, n_ops, magnitude, lo, hi, self.fill)
        if cfg.cutout:
            x = self.cutout(x, cfg.cutout)
        if cfg.erasing:
            x = self.erase(x, cfg.erasing)
        if cfg.noise:
            x = x + cfg.noise * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        if cfg.mixes and y is not None:
            x, y = self.mix(x, y)
        return x, y

    # --- per-sample randomness (drawn on the CPU generator, moved to the batch's device) -------------------

    def _uniform(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=self.generator).to(device)

    def _coin(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return (self._uniform(x.shape[0], x.device) < p)[:, None, None, None]

    def random_crop(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), value=self.fill)
        wp = w + 2 * pad
        top = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=self.generator).to(x.device)
        left = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=self.generator).to(x.device)
        rows = top + torch.arange(h, device=x.device).view(1, h, 1)
        cols = left + torch.arange(w, device=x.device).view(1, 1, w)
        # one flat spatial index per output pixel, shared by all channels of a sample
        flat = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)

    def _box_mask(self, x: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) mask of one box per sample, heights `bh` and widths `bw`, at a random centre
        (clipped at the border)."""
        n, _, h, w = x.shape
        cy = torch.randint(0, h, (n, 1, 1), generator=self.generator).to(x.device)
        cx = torch.randint(0, w, (n, 1, 1), generator=self.generator).to(x.device)
        bh, bw = bh.view(n, 1, 1), bw.view(n, 1, 1)
        rows = torch.arange(h, device=x.device).view(1, h, 1) - (cy - bh // 2)
        cols = torch.arange(w, device=x.device).view(1, 1, w) - (cx - bw // 2)
        return ((rows >= 0) & (rows < bh) & (cols >= 0) & (cols < bw))[:, None]

    def cutout(self, x: torch.Tensor, size: int) -> torch.Tensor:
        side = torch.full((x.shape[0],), size, device=x.device)
        return x.masked_fill(self._box_mask(x, side, side), 0.0)

    def erase(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Random erasing (Zhong et al. 2020): with probability p, a box of 2-33% of the area and aspect
        ratio 0.3-3.3 is set to 0 (the dataset mean)."""
        n, _, h, w = x.shape
        area = (0.02 + 0.31 * self._uniform(n, x.device)) * h * w
        aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * self._uniform(n, x.device))
        bh = (area * aspect).sqrt().round().clamp(1, h).long()
        bw = (area / aspect).sqrt().round().clamp(1, w).long()
        mask = self._box_mask(x, bh, bw) & self._coin(x, p)
        return x.masked_fill(mask, 0.0)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp or CutMix with one Beta(alpha, alpha) draw per batch; soft targets mixed in the same
        proportion as the pixels."""
        assert self.num_classes is not None
        cfg, g = self.cfg, self.generator
        if y.ndim == 1:
            if (y < 0).any():
                raise ValueError("MixUp/CutMix need every sample labelled (got ignore_index labels)")
            y = F.one_hot(y, self.num_classes).to(x.dtype)
        use_cutmix = bool(cfg.cutmix) and (not cfg.mixup or float(torch.rand(1, generator=g)) < 0.5)
        alpha = cfg.cutmix if use_cutmix else cfg.mixup
        # torch has no Beta sampler that takes a generator: seed numpy's from ours (still reproducible)
        lam = float(np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g))).beta(alpha, alpha))
        perm = torch.randperm(x.shape[0], generator=g).to(x.device)
        if use_cutmix:
            n, _, h, w = x.shape
            cut = math.sqrt(1.0 - lam)
            bh = torch.full((n,), int(round(h * cut)), device=x.device)
            bw = torch.full((n,), int(round(w * cut)), device=x.device)
            box = self._box_mask(x[:1].expand(n, -1, -1, -1), bh, bw)[:1].expand(n, -1, -1, -1)
            x = torch.where(box, x[perm], x)
            lam = 1.0 - float(box[0].float().mean())  # the pasted area after clipping at the border
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, lam * y + (1.0 - lam) * y[perm]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def make_augment(cfg: AugmentConfig | dict | str, seed: int = 0, *, fill: float = 0.0, num_classes: int | None = None,
                 value_range: tuple[float, float] | None = None) -> Augment:
    """Build the batch transform for `cfg`; `fill` is the padding value used by crop and affine ops,
    `num_classes` sizes MixUp/CutMix targets, `value_range` is (black, white) after normalization."""
    if not isinstance(cfg, AugmentConfig):
        cfg = AugmentConfig.model_validate(cfg)
    return Augment(cfg, seed, fill=fill, num_classes=num_classes, value_range=value_range)

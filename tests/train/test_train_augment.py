"""Batch augmentation: shapes, determinism, and that each op really does what it says."""

from __future__ import annotations

import torch

from frugalml.data.augment import AugmentConfig, make_augment


def dots(n: int = 64, size: int = 9) -> torch.Tensor:
    """One bright pixel in the centre of each image."""
    x = torch.zeros(n, 1, size, size)
    x[:, 0, size // 2, size // 2] = 1.0
    return x


def where(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1).argmax(1)
    return torch.stack([flat // x.shape[-1], flat % x.shape[-1]], 1)


def test_shapes_labels_and_determinism():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16)
    cfg = AugmentConfig(crop_padding=2, hflip=True, cutout=3, noise=0.1)
    a1, y1 = make_augment(cfg, seed=5)(x, y)
    a2, _ = make_augment(cfg, seed=5)(x, y)
    a3, _ = make_augment(cfg, seed=6)(x, y)
    assert a1.shape == x.shape and a1.dtype == x.dtype and torch.equal(y1, y)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_random_crop_shifts_content_within_the_padding():
    x = dots()
    out, _ = make_augment({"crop_padding": 2}, seed=0)(x, torch.zeros(64))
    shift = where(out) - 4
    assert shift.abs().max() <= 2 and (shift != 0).any(dim=1).sum() > 32
    assert len({tuple(s) for s in shift.tolist()}) > 10  # per-sample offsets, not one for the batch
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # moved, never duplicated or lost


def test_random_crop_pads_with_fill():
    x = torch.full((32, 1, 6, 6), 5.0)
    out, _ = make_augment({"crop_padding": 3}, seed=1, fill=-1.0)(x, torch.zeros(32))
    assert set(out.unique().tolist()) == {-1.0, 5.0}


def test_hflip_mirrors_about_half_the_images():
    x = torch.zeros(200, 1, 5, 5)
    x[:, 0, 2, 0] = 1.0
    out, _ = make_augment({"hflip": True}, seed=0)(x, torch.zeros(200))
    flipped = out[:, 0, 2, 4] == 1.0
    assert torch.equal(flipped, out[:, 0, 2, 0] == 0.0)
    assert 60 < int(flipped.sum()) < 140


def test_cutout_zeroes_a_square():
    x = torch.ones(32, 2, 10, 10)
    out, _ = make_augment({"cutout": 4}, seed=0)(x, torch.zeros(32))
    holes = (out == 0).sum(dim=(2, 3))
    assert torch.equal(holes[:, 0], holes[:, 1])  # same hole in every channel
    assert holes.max() == 16 and holes.min() > 0


def test_noise_has_the_requested_scale():
    out, _ = make_augment({"noise": 0.5}, seed=0)(torch.zeros(64, 1, 16, 16), torch.zeros(64))
    assert abs(float(out.std()) - 0.5) < 0.02


def test_generator_state_round_trips():
    aug = make_augment({"crop_padding": 1, "hflip": True}, seed=0)
    x = torch.randn(8, 1, 6, 6)
    aug(x, None)
    state = {k: v.clone() for k, v in aug.state_dict().items()}
    first, _ = aug(x, None)
    aug.load_state_dict(state)
    again, _ = aug(x, None)
    assert torch.equal(first, again)

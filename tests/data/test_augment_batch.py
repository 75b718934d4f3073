"""Batch augmentation beyond crop/flip/cutout/noise: affine warps, RandAugment/TrivialAugment,
random erasing, MixUp/CutMix with soft targets, named pipelines, and exact resume."""

from __future__ import annotations

import pytest
import torch

from frugalml.config import Config
from frugalml.data._augment_ops import OPS, affine_from, apply_affine, rand_augment
from frugalml.data.augment import AugmentConfig, make_augment
from frugalml.errors import ConfigError


def dot(n: int = 32, size: int = 9, row: int = 2, col: int = 4) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, 0, row, col] = 1.0
    return x


def test_rotation_by_180_degrees_mirrors_a_dot_through_the_centre():
    one, zero = torch.ones(1), torch.zeros(1)
    theta = affine_from(torch.full((1,), 180.0), one, zero, zero, zero, zero)
    out = apply_affine(dot(1), theta, 0.0)
    assert out[0, 0, 6, 4] == pytest.approx(1.0, abs=1e-5) and out.sum() == pytest.approx(1.0, abs=1e-5)


def test_random_rotation_draws_an_angle_per_sample():
    out, _ = make_augment({"rotate": 180}, seed=0)(dot(), None)
    assert len({int(o.flatten().argmax()) for o in out}) > 3


def test_translate_and_scale_keep_shape_and_fill_the_border():
    x = torch.full((16, 2, 12, 12), 3.0)
    out, _ = make_augment({"translate": 0.3, "scale": [0.5, 0.7]}, seed=1, fill=-1.0)(x, None)
    assert out.shape == x.shape
    assert torch.isclose(out, torch.tensor(-1.0)).any() and torch.isclose(out, torch.tensor(3.0)).any()


def test_vflip_flips_about_half_upside_down():
    out, _ = make_augment({"vflip": True}, seed=0)(dot(200, 5, 0, 2), None)
    flipped = out[:, 0, 4, 2] == 1.0
    assert 60 < int(flipped.sum()) < 140


def test_random_erasing_sets_boxes_to_zero_with_the_given_probability():
    out, _ = make_augment({"erasing": 0.5}, seed=0)(torch.ones(400, 1, 16, 16), None)
    erased = (out == 0).flatten(1).any(1)
    assert 150 < int(erased.sum()) < 250
    area = (out == 0).flatten(1).float().mean(1)[erased]
    assert area.min() > 0.005 and area.max() < 0.4


@pytest.mark.parametrize("magnitude", [9, None])
def test_every_randaugment_op_runs_on_batches(magnitude):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 10, 10)
    lo, hi = torch.zeros(64, 1, 1, 1), torch.ones(64, 1, 1, 1)
    out = rand_augment(x, g, 3, magnitude, lo, hi, 0.0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert len(OPS) == 14


def test_presets_and_yaml_short_form():
    assert AugmentConfig.preset("weak").hflip and AugmentConfig.preset("strong").randaugment == 2

    class T(Config):
        augment: AugmentConfig | None = None

    assert T.model_validate({"augment": "strong"}).augment.erasing == 1.0
    with pytest.raises(ConfigError, match="unknown augmentation pipeline 'medium'; allowed: weak, strong"):
        T.checked("train", {"augment": "medium"})


def test_mixup_returns_soft_targets_mixed_like_the_pixels():
    x = torch.zeros(8, 1, 4, 4)
    x[:4] = 1.0  # class 0 images are white, class 1 black
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    out, soft = make_augment({"mixup": 1.0}, seed=3, num_classes=2)(x, y)
    assert soft.shape == (8, 2) and torch.allclose(soft.sum(1), torch.ones(8))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), soft[:, 0], atol=1e-6)  # white share == class-0 weight


def test_cutmix_label_weight_equals_the_pasted_area():
    x = torch.zeros(6, 1, 10, 10)
    x[:3] = 1.0
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    out, soft = make_augment({"cutmix": 1.0}, seed=5, num_classes=2)(x, y)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), soft[:, 0], atol=1e-6)


def test_mixing_needs_num_classes_and_labels():
    with pytest.raises(ValueError, match="num_classes"):
        make_augment({"mixup": 0.2})
    with pytest.raises(ValueError, match="labelled"):
        make_augment({"mixup": 0.2}, num_classes=3)(torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, -100, 2]))


def test_strong_pipeline_is_deterministic_and_resumes_exactly():
    x, y = torch.randn(16, 1, 12, 12), torch.arange(16) % 4
    a = make_augment("strong", seed=7, num_classes=4)
    b = make_augment("strong", seed=7, num_classes=4)
    assert torch.equal(a(x, y)[0], b(x, y)[0])
    state = {k: v.clone() for k, v in a.state_dict().items()}
    first = a(x, y)[0]
    a.load_state_dict(state)
    assert torch.equal(a(x, y)[0], first)


def test_trainer_trains_with_mixup_soft_targets():
    from frugalml.data import DataConfig, load_data
    from frugalml.models import build_model
    from frugalml.train import TrainConfig, Trainer

    data = load_data(DataConfig(name="synthetic", synthetic_samples=128))
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[16])
    cfg = TrainConfig(epochs=2, batch_size=32, augment={"mixup": 0.4, "cutmix": 1.0, "trivialaugment": True})
    result = Trainer(model, data, cfg, progress=False).fit()
    assert result.epochs_run == 2 and result.history[-1]["train_loss"] > 0

"""Learning-rate curves and TrainConfig validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from frugalml.train import TrainConfig
from frugalml.train.optim import build_optimizer, build_scheduler

STEPS_PER_EPOCH = 10


def lr_curve(**kw) -> list[float]:
    cfg = TrainConfig(**{"epochs": 5, "lr": 0.1, **kw})
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, STEPS_PER_EPOCH)
    lrs = []
    for _ in range(cfg.epochs * STEPS_PER_EPOCH):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def torch_curve(scheduler_cls, **kw) -> list[float]:
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = scheduler_cls(opt, **kw)
    lrs = []
    for _ in range(5 * STEPS_PER_EPOCH):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_decays_from_peak_to_about_zero():
    lrs = lr_curve(schedule="cosine")
    assert lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 1e-3 and lrs[len(lrs) // 2] == pytest.approx(0.05, rel=1e-6)
    assert lrs == pytest.approx(torch_curve(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=len(lrs)))


def test_cosine_with_linear_warmup():
    lrs = lr_curve(schedule="cosine", warmup_epochs=1)
    warm = lrs[:STEPS_PER_EPOCH]
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert warm[1] - warm[0] == pytest.approx(warm[2] - warm[1])  # linear
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == STEPS_PER_EPOCH


def test_onecycle_rises_to_the_peak_then_anneals():
    lrs = lr_curve(schedule="onecycle")
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1) and peak == round(0.3 * len(lrs)) - 1
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] == pytest.approx(0.1 / 25e4)
    # the same curve as torch's own OneCycleLR (without its momentum cycling)
    expected = torch_curve(
        torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=len(lrs), cycle_momentum=False
    )
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_constant_schedule_is_flat():
    assert lr_curve(schedule="constant") == pytest.approx([0.1] * 5 * STEPS_PER_EPOCH)


def test_defaults():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr) == (10, 128, "sgd", 0.05)
    assert cfg.momentum == 0.9 and cfg.nesterov and cfg.weight_decay == 5e-4 and cfg.grad_accum == 1
    assert cfg.augment is None and cfg.seed is None and cfg.early_stopping is None


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0},
        {"epochs": -1},
        {"grad_accum": 0},
        {"label_smoothing": 1.0},
        {"optimizer": "lbfgs"},
        {"schedule": "step"},
        {"early_stopping": 0},
        {"epochs": 2, "warmup_epochs": 3},
        {"augment": {"crop_padding": -1}},
        {"lr_typo": 0.1},
    ],
)
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        TrainConfig(**bad)


def test_fingerprint_tracks_every_field():
    assert TrainConfig().fingerprint() == TrainConfig().fingerprint()
    assert TrainConfig().fingerprint() != TrainConfig(lr=0.051).fingerprint()
    assert TrainConfig().fingerprint() != TrainConfig(augment={"hflip": True}).fingerprint()

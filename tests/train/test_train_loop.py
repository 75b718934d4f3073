"""The training loop: learning, gradient accumulation, clipping, bf16, extension points, early stopping."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
from train_helpers import make_bundle, make_model, params_equal

from frugalml.errors import ConfigError
from frugalml.train import TrainConfig, Trainer, evaluate


def fit(model, data, **kw):
    extra = {k: kw.pop(k) for k in ("loss_terms", "batch_transforms", "callbacks", "checkpoint_dir") if k in kw}
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 0.1, "seed": 0, **kw})
    trainer = Trainer(model, data, cfg, progress=False, **extra)
    return trainer, trainer.fit()


def test_learns_a_learnable_task(data):
    model = make_model()
    before = evaluate(model, data.x_val, data.y_val)
    _, result = fit(model, data, epochs=4, augment={"noise": 0.05})
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7
    assert result.best_val_accuracy >= 0.8 > before + 0.2  # chance is 0.25
    assert result.epochs_run == 4 and not result.stopped_early
    assert result.history[-1]["steps"] == 4 * 6  # 192 samples / 32
    assert evaluate(model, data.x_val, data.y_val) == result.history[-1]["val_accuracy"]


def test_fit_hands_back_an_inference_model(data):
    """A forward pass after fit (a shape check, a trace, a calibration batch) must not move BatchNorm
    statistics: a structured-pruning check on two images once did, and cost 0.1-0.2 point."""
    model = make_model(norm=True)
    fit(model, data, epochs=1)
    assert not model.training
    stats = model[1].running_mean.clone(), model[1].running_var.clone()
    model(data.x_val[:2] + 3.0)
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].running_var, stats[1])


def test_zero_epochs_means_no_training(data):
    model = make_model()
    reference = make_model()
    _, result = fit(model, data, epochs=0)
    assert result.epochs_run == 0 and result.history == [] and result.best_val_accuracy is None
    assert params_equal(model, reference)


def test_grad_accum_matches_one_big_batch():
    data = make_bundle(n_train=100)  # 100 = 6 * 16 + 4: a ragged last step is weighted correctly too
    common = {"epochs": 2, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}
    big, small = make_model(), make_model()
    fit(big, data, batch_size=16, **common)
    fit(small, data, batch_size=8, grad_accum=2, **common)
    for (name, a), b in zip(big.state_dict().items(), small.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    unaccumulated = make_model()
    fit(unaccumulated, data, batch_size=8, **common)
    assert not torch.allclose(unaccumulated[0].weight, big[0].weight, atol=1e-4)


def test_grad_clip_bounds_the_update_norm(data):
    norms = []

    class GradNorm:
        def on_step_end(self, trainer, step, loss):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    fit(make_model(), data, epochs=1, grad_clip=0.05, callbacks=[GradNorm()])
    assert len(norms) == 6 and max(norms) <= 0.05 + 1e-5
    norms.clear()
    fit(make_model(), data, epochs=1, callbacks=[GradNorm()])
    assert max(norms) > 0.05  # so the bound above came from clipping


def test_bf16_autocast_trains(data):
    model = make_model(norm=True)
    _, result = fit(model, data, bf16=True, epochs=2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert result.best_val_accuracy > 0.5


def test_channels_last_trains_like_default_layout_and_hands_back_contiguous(data):
    torch.manual_seed(0)
    a, b = make_model(norm=True), make_model(norm=True)
    b.load_state_dict(a.state_dict())
    fit(a, data, epochs=1)
    fit(b, data, epochs=1, channels_last=True)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-4), name  # same maths, different memory layout
        assert pb.is_contiguous(), name


def test_no_weight_decay_on_biases_and_norms(data):
    trainer = Trainer(make_model(norm=True), data, TrainConfig(epochs=1, weight_decay=0.01), progress=False)
    trainer.fit()
    decay = {g["weight_decay"]: [p.ndim for p in g["params"]] for g in trainer.optimizer.param_groups}
    assert all(d > 1 for d in decay[0.01]) and all(d <= 1 for d in decay[0.0])
    assert len(decay[0.0]) == 4  # conv bias, BN weight and bias, linear bias


def test_extension_points_are_called(data):
    calls = {"term": 0, "transform": 0, "hooks": []}
    seen_inputs = []

    def term(model, x, y, logits):
        calls["term"] += 1
        assert logits.shape == (len(y), 4)
        return 0.0 * logits.sum()

    def zero_images(x, y):
        calls["transform"] += 1
        return torch.zeros_like(x), y

    class Recorder:
        def on_train_start(self, trainer):
            calls["hooks"].append("start")
            trainer.model[0].register_forward_pre_hook(lambda m, args: seen_inputs.append(args[0].abs().sum()))

        def on_step_end(self, trainer, step, loss):
            assert step == trainer.step and isinstance(loss, float)
            calls["hooks"].append("step")

        def on_epoch_end(self, trainer, epoch, metrics):
            assert epoch == trainer.epoch and "val_accuracy" in metrics
            calls["hooks"].append("epoch")

        def on_train_end(self, trainer):
            calls["hooks"].append("end")

    fit(make_model(), data, epochs=2, loss_terms=[term], batch_transforms=[zero_images], callbacks=[Recorder()])
    assert calls["term"] == calls["transform"] == 12
    assert calls["hooks"] == ["start"] + (["step"] * 6 + ["epoch"]) * 2 + ["end"]
    # the model saw the transformed (zero) batches while training; evaluation sees real data
    assert sum(1 for s in seen_inputs if s == 0) == 12


def test_loss_term_changes_training(data):
    def shrink(model, x, y, logits):
        return 1.0 * sum(p.pow(2).sum() for p in model.parameters())

    plain, shrunk = make_model(), make_model()
    fit(plain, data, epochs=1, weight_decay=0.0)
    fit(shrunk, data, epochs=1, weight_decay=0.0, loss_terms=[shrink])
    assert shrunk[-1].weight.norm() < 0.5 * plain[-1].weight.norm()


def test_callback_can_stop_training(data):
    class StopAfterFirst:
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = True

    _, result = fit(make_model(), data, epochs=5, callbacks=[StopAfterFirst()])
    assert result.epochs_run == 1


def test_early_stopping_stops_and_restores_best(data):
    class Sabotage:  # from epoch 2 on, wipe the weights after every step: val accuracy falls to chance
        def on_step_end(self, trainer, step, loss):
            if trainer.epoch >= 2:
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.zero_()

    model = make_model()
    _, result = fit(model, data, epochs=10, early_stopping=2, callbacks=[Sabotage()])
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert result.history[1]["val_accuracy"] == 0.25 < result.history[0]["val_accuracy"]
    assert evaluate(model, data.x_val, data.y_val) == result.best_val_accuracy
    assert model[0].weight.abs().sum() > 0


def test_early_stopping_needs_validation_data(data):
    data.x_val, data.y_val = data.x_val[:0], data.y_val[:0]
    with pytest.raises(ConfigError, match="validation"):
        fit(make_model(), data, early_stopping=2)


def test_logs_one_line_per_epoch_when_not_a_tty(data, caplog):
    with caplog.at_level(logging.INFO, logger="frugalml.train"):
        fit(make_model(), data, epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and all("val_acc" in line and "lr" in line for line in lines)


def test_soft_and_ignored_targets_are_accepted(data):
    def unlabel_half(x, y):  # semi-supervised style: -100 marks samples without a label
        y = y.clone()
        y[::2] = -100
        return x, y

    _, result = fit(make_model(), data, epochs=1, batch_transforms=[unlabel_half])
    assert 0.0 <= result.history[0]["train_accuracy"] <= 1.0

    def soften(x, y):
        return x, nn.functional.one_hot(y, 4).float() * 0.9 + 0.025

    _, result = fit(make_model(), data, epochs=2, batch_transforms=[soften])
    assert result.best_val_accuracy > 0.5


def test_rebuild_optimizer_keeps_the_lr_curve(data):
    lrs = {}

    class Rebuild:
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                old = trainer.optimizer
                lrs["before"] = old.param_groups[0]["lr"]
                trainer.rebuild_optimizer()
                assert trainer.optimizer is not old and not trainer.optimizer.state
                lrs["after"] = trainer.optimizer.param_groups[0]["lr"]

    _, result = fit(make_model(), data, epochs=2, callbacks=[Rebuild()])
    assert lrs["before"] == lrs["after"] != 0.1
    assert result.epochs_run == 2 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]

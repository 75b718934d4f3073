"""Determinism, checkpoint files, exact resume (after a stop, mid-epoch crash or torn write), bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_model, params_equal

from frugalml.errors import ArtifactError, ConfigError
from frugalml.train import TrainConfig, Trainer
from frugalml.train import checkpoint as ckpt

# dropout (global RNG), augmentation (own generator), momentum and a decaying lr: every piece of state
CFG = {"epochs": 3, "batch_size": 32, "lr": 0.1, "seed": 3, "augment": {"crop_padding": 1, "hflip": True}}


class Crash(Exception):
    pass


class CrashAt:
    """Simulates the process dying at a given (epoch, step-in-epoch)."""

    def __init__(self, epoch: int, step_in_epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, step_in_epoch

    def on_step_end(self, trainer, step, loss):
        if trainer.epoch == self.epoch and step - (self.epoch - 1) * trainer.steps_per_epoch == self.step_in_epoch:
            raise Crash


def run(data, tmp_path=None, resume=False, callbacks=(), **overrides):
    model = make_model(dropout=0.2)
    cfg = TrainConfig(**{**CFG, **overrides})
    trainer = Trainer(model, data, cfg, checkpoint_dir=tmp_path, callbacks=callbacks, progress=False)
    return model, trainer.fit(resume=resume)


def test_same_seed_gives_bit_identical_weights(data):
    a, ra = run(data)
    b, rb = run(data)
    c, _ = run(data, seed=4)
    assert params_equal(a, b) and ra.history[-1]["train_loss"] == rb.history[-1]["train_loss"]
    assert not params_equal(a, c)


def test_checkpoint_files_and_state(data, tmp_path):
    model, result = run(data, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"weights.safetensors", "optimizer.safetensors", "state.json"}
    weights = load_file(tmp_path / "weights.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 3 and state["step"] == 18 and state["history"] == result.history
    assert state["config_hash"] == TrainConfig(**CFG).fingerprint()
    tensors = load_file(tmp_path / "optimizer.safetensors")
    assert any(k.endswith("momentum_buffer") for k in tensors) and "rng.torch" in tensors
    assert "ext.transform0.generator" in tensors  # the augmentation generator


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_after_interruption_is_exact(data, tmp_path, optimizer):
    straight, expected = run(data, optimizer=optimizer)
    with pytest.raises(Crash):  # dies right after the epoch-2 checkpoint, at the first step of epoch 3
        run(data, tmp_path, optimizer=optimizer, callbacks=[CrashAt(3, 1)])
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 2
    resumed, result = run(data, tmp_path, resume=True, optimizer=optimizer)  # a new Trainer and model
    assert params_equal(straight, resumed)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in expected.history]
    assert result.epochs_run == 3


def test_crash_mid_epoch_redoes_the_partial_epoch(data, tmp_path):
    straight, _ = run(data, early_stopping=5)
    with pytest.raises(Crash):
        run(data, tmp_path, early_stopping=5, callbacks=[CrashAt(2, 3)])
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1
    resumed, result = run(data, tmp_path, resume=True, early_stopping=5)
    assert params_equal(straight, resumed) and result.epochs_run == 3


def test_torn_checkpoint_write_falls_back_to_last_complete_epoch(data, tmp_path, monkeypatch):
    """Killed after epoch 2's tensors were written but before its state.json: epoch 1 is still whole."""
    straight, _ = run(data)
    real_write = ckpt.atomic_write_json

    def die_on_second_state(path, obj):
        if obj["epoch"] == 2:
            raise Crash
        real_write(path, obj)

    monkeypatch.setattr(ckpt, "atomic_write_json", die_on_second_state)
    with pytest.raises(Crash):
        run(data, tmp_path)
    monkeypatch.setattr(ckpt, "atomic_write_json", real_write)
    assert (tmp_path / "weights.prev.safetensors").exists()
    resumed, _ = run(data, tmp_path, resume=True)
    assert params_equal(straight, resumed)


def test_resuming_a_finished_run_trains_no_more(data, tmp_path):
    first, result = run(data, tmp_path)
    again, result2 = run(data, tmp_path, resume=True)
    assert params_equal(first, again) and result2.history == result.history


def test_resume_without_checkpoint_starts_fresh(data, tmp_path):
    straight, _ = run(data)
    fresh, result = run(data, tmp_path / "new", resume=True)
    assert params_equal(straight, fresh) and result.epochs_run == 3


def test_corrupt_weights_name_the_file(data, tmp_path):
    run(data, tmp_path, epochs=1)
    (tmp_path / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        run(data, tmp_path, resume=True, epochs=1)


def test_corrupt_state_names_the_file(data, tmp_path):
    run(data, tmp_path, epochs=1)
    text = (tmp_path / "state.json").read_text()
    (tmp_path / "state.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match="state.json"):
        run(data, tmp_path, resume=True, epochs=1)


def test_missing_tensor_file_is_an_incomplete_checkpoint(data, tmp_path):
    run(data, tmp_path, epochs=1)
    (tmp_path / "optimizer.safetensors").unlink()
    with pytest.raises(ArtifactError, match="optimizer.safetensors"):
        run(data, tmp_path, resume=True, epochs=1)


def test_checkpoint_from_another_config_is_refused(data, tmp_path):
    run(data, tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="different train config.*lr"):
        run(data, tmp_path, resume=True, epochs=1, lr=0.2)


def test_fresh_run_discards_old_checkpoint(data, tmp_path):
    run(data, tmp_path, epochs=1)
    with pytest.raises(Crash):
        run(data, tmp_path, epochs=1, lr=0.2, callbacks=[CrashAt(1, 1)])
    assert not (tmp_path / "state.json").exists()  # the lr=0.1 state can no longer be mistaken for this run

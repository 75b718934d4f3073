"""Weight averaging: BatchNorm recomputation, SWA / EMA arithmetic, uniform and greedy soups."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from frugalml.compress.average import (
    EMA,
    SWA,
    Soup,
    WeightAverager,
    average,
    average_weights,
    recompute_bn,
    soup,
)
from frugalml.data import DataConfig, load_data
from frugalml.errors import ConfigError
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer

TRAIN = {"batch_size": 32, "lr": 0.05}


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=200, synthetic_classes=4, synthetic_shape=(1, 8, 8)))


def _cnn(data, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", data.input_shape, data.num_classes, width=4)


def test_recompute_bn_estimates_the_statistics_of_the_training_data(data):
    model = _cnn(data).eval()
    bn = model.features[0][1]
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
        conv_out = model.features[0][0](data.x_train)  # what the first BatchNorm sees
    assert recompute_bn(model, data, batch_size=len(data.x_train)) == 3
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training  # momentum and mode restored


def test_recompute_bn_on_given_inputs_leaves_skipped_batchnorms_alone(data):
    model = _cnn(data).eval()
    first, second = model.features[0][1], model.features[1][1]
    kept = (second.running_mean.clone(), second.running_var.clone())
    x = data.x_test[:64] * 3.0  # not the training split: the statistics must come from these inputs
    with torch.no_grad():
        conv_out = model.features[0][0](x)
    assert recompute_bn(model, None, batch_size=len(x), x=x, skip=[second]) == 2
    assert torch.allclose(first.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.equal(second.running_mean, kept[0]) and torch.equal(second.running_var, kept[1])


def test_swa_is_the_mean_of_the_snapshots_and_ema_follows_its_formula():
    model = nn.Linear(3, 2)
    trainer = SimpleNamespace(model=model)
    swa, ema = WeightAverager("swa", start_epoch=2), WeightAverager("ema", decay=0.5)
    snapshots = []
    for epoch in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        snapshots.append(model.weight.detach().clone())
        swa.on_epoch_end(trainer, epoch, {})
        ema.on_step_end(trainer, epoch, 0.0)
    assert swa.count == 3 and torch.allclose(swa.avg["weight"], torch.stack(snapshots[1:]).mean(0))
    assert torch.allclose(ema.avg["weight"], torch.full((2, 3), ((1 * 0.5 + 2 * 0.5) * 0.5 + 3 * 0.5) * 0.5 + 4 * 0.5))
    restored = WeightAverager("swa")
    restored.load_state_dict(swa.state_dict())
    assert restored.count == 3 and torch.equal(restored.avg["weight"], swa.avg["weight"])


@pytest.mark.parametrize("cfg", [SWA(epochs=3, last_epochs=2, train=TRAIN), EMA(epochs=2, decay=0.9, train=TRAIN)])
def test_swa_and_ema_keep_the_architecture_and_report(data, cfg):
    model = _cnn(data)
    out = average(model, cfg, data)
    assert set(out.state_dict()) == set(model.state_dict()) and out(data.sample_input(3)).shape == (3, 4)
    assert any((a != b).any() for a, b in zip(out.state_dict().values(), model.state_dict().values()))


def test_swa_window_longer_than_training_is_refused(data):
    with pytest.raises(ConfigError, match="average.last_epochs: 5 is more than the 2 fine-tuning epochs"):
        average(_cnn(data), SWA(epochs=2, last_epochs=5), data)


def test_uniform_soup_averages_weights_and_recomputes_bn(data):
    models = [_cnn(data, seed) for seed in (0, 1, 2)]
    out, m = soup(models, Soup(ingredients=["a", "b", "c"]), data, ["a", "b", "c"])
    w = torch.stack([mm.fc.weight for mm in models]).mean(0)
    assert torch.allclose(out.fc.weight, w) and m["kept"] == ["a", "b", "c"]
    plain = average_weights(models)
    assert not torch.allclose(out.features[0][1].running_mean, plain.features[0][1].running_mean)


def test_greedy_soup_leaves_out_a_bad_ingredient(data):
    good = _cnn(data)
    Trainer(good, data, TrainConfig(epochs=3, **TRAIN), progress=False).fit()
    nearby = copy.deepcopy(good)
    Trainer(nearby, data, TrainConfig(epochs=1, seed=3, **TRAIN), progress=False).fit()
    bad = _cnn(data, seed=9)  # random weights
    out, m = soup([bad, good, nearby], Soup(ingredients=["x", "y", "z"], selection="greedy"), data, ["bad", "good", "near"])
    assert "bad" not in m["kept"] and m["kept"][0] in ("good", "near")
    assert m["val_accuracy_averaged"] >= max(m["ingredients_val_accuracy"].values())


def test_soup_ingredients_must_share_shapes(data):
    other = build_model("cnn", data.input_shape, data.num_classes, width=8)
    with pytest.raises(ConfigError, match=r"average.ingredients.1: '1' differs from '0' in 'features.0.0.weight'"):
        soup([_cnn(data), other], Soup(ingredients=["a", "b"]), data)
    with pytest.raises(ConfigError, match="a soup needs at least 2 ingredients, got 1"):
        Soup.checked("stages.s", {"ingredients": ["a"]})


def test_swa_resumes_from_its_checkpoint_with_the_same_average(tmp_path, data):
    from frugalml.compress.average import average_training

    cfg = SWA(epochs=3, last_epochs=2, train=TRAIN)
    first, _ = average_training(_cnn(data), cfg, data, checkpoint_dir=tmp_path / "ck")
    again, m = average_training(_cnn(data), cfg, data, checkpoint_dir=tmp_path / "ck", resume=True)
    assert m["averaged"] == 2 and m["training"]["epochs_run"] == 3
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

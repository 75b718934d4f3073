"""Every zoo model survives static int8 on the backends that need no compiler, and its artifact
round-trips; a structurally pruned model (fewer channels than its factory builds) quantizes,
saves, loads and exports."""

from __future__ import annotations

import logging

import pytest
import torch
from tests.compress.quantize.test_quant_helpers import SHAPE, cnn, data, one_thread, spec  # noqa: F401

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, save_quantized
from frugalml.compress.quantize.stage import build
from frugalml.export import export
from frugalml.models import build_model, list_models

LOG = logging.getLogger("test")


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_quantizes_static_int8(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, SHAPE, 4).eval()
    x = data().sample_input(8)
    for backend in ("torch", "onnxruntime"):
        cfg = QuantizeStage(mode="static", observer="minmax", calibration_batches=1, calibration_batch_size=16)
        q = build(model, cfg, backend, data(), log=LOG)
        out = q(x)
        assert out.shape == (8, 4) and torch.isfinite(out).all()
        save_quantized(q, tmp_path / backend, spec(name))
        assert torch.equal(artifact.load(tmp_path / backend)(x), out)


def _prune_channels(model, ratio=0.5):
    import torch_pruning as tp

    example = data().sample_input(2)
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[model.fc])  # fmt: skip
    pruner.step()
    return model


@pytest.mark.parametrize("backend", ["pt2e", "torch", "onnxruntime"])
def test_pruned_model_quantizes_roundtrips_and_exports(backend, tmp_path):
    model, model_spec = cnn()
    pruned = _prune_channels(model).eval()
    assert pruned.features[0][0].out_channels == 4  # fewer channels than the factory's 8
    artifact.save(pruned, tmp_path / "pruned", model_spec)
    float_model = artifact.load(tmp_path / "pruned")
    q = build(float_model, QuantizeStage(mode="static", observer="minmax", calibration_batches=2), backend, data(),
              log=LOG)  # fmt: skip
    if backend == "pt2e":
        q.compiled = False  # exact comparisons below; the compiled path is covered in test_quant_modes
    x = data().sample_input(16)
    assert (q(x).argmax(1) == float_model(x).argmax(1)).float().mean() >= 0.85
    save_quantized(q, tmp_path / "q", model_spec)
    loaded = artifact.load(tmp_path / "q")
    if backend == "pt2e":
        loaded.compiled = False
    assert torch.equal(loaded(x), q(x))
    fmt = "pt2" if backend == "pt2e" else "onnx"
    report = export(tmp_path / "q", fmt, data=x)
    assert report.path.is_file() and report.top1_agreement >= 0.95 and report.max_abs_diff < 0.05

"""Every zoo model survives static int8 on the backends that need no compiler, and its artifact
round-trips; a structurally pruned model (fewer channels than its factory builds) quantizes,
saves, loads and exports."""

from __future__ import annotations

import pytest
import torch

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.export import export
from frugalml.models import build_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_quantizes_static_int8(name, data, make, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.num_classes).eval()
    x = data.sample_input(8)
    for backend in ("torch", "onnxruntime"):
        q = make(
            model, backend, mode="static", observer="minmax", calibration_batches=1, calibration_batch_size=16
        )
        out = q(x)
        assert out.shape == (8, 4) and torch.isfinite(out).all()
        save_quantized(q, tmp_path / backend, model.frugal_spec)
        assert torch.equal(artifact.load(tmp_path / backend)(x), out)


def _prune_channels(model, example, ratio=0.5):
    import torch_pruning as tp

    importance = tp.importance.MagnitudeImportance(p=1)
    tp.pruner.MetaPruner(
        model, example, importance=importance, pruning_ratio=ratio, ignored_layers=[model.fc]
    ).step()
    return model


@pytest.mark.parametrize("backend", ["pt2e", "torch", "onnxruntime"])
def test_pruned_model_quantizes_roundtrips_and_exports(backend, cnn, data, make, agreement, tmp_path):
    model, model_spec = cnn
    pruned = _prune_channels(model, data.sample_input(2)).eval()
    assert pruned.features[0][0].out_channels == 4  # fewer channels than the factory's 8
    artifact.save(pruned, tmp_path / "pruned", model_spec)
    float_model = artifact.load(tmp_path / "pruned")
    q = make(float_model, backend, mode="static", observer="minmax")
    q.compiled = False  # pt2e: exact comparisons below; the compiled path is covered in test_quant_modes
    x = data.sample_input(16)
    assert agreement(q(x), float_model(x)) >= 0.85
    save_quantized(q, tmp_path / "q", model_spec)
    loaded = artifact.load(tmp_path / "q")
    loaded.compiled = False
    assert torch.equal(loaded(x), q(x))
    fmt = "pt2" if backend == "pt2e" else "onnx"
    report = export(tmp_path / "q", fmt, data=x)
    assert report.path.is_file() and report.top1_agreement >= 0.95 and report.max_abs_diff < 0.05


@pytest.mark.parametrize(("mode", "backend", "bits"), [("codebook", "torch", 3), ("dynamic", "onnxruntime", 8)])
def test_frugalml_save_of_a_quantized_model_writes_its_own_format(mode, backend, bits, data, measure_cfg, tmp_path):
    """`frugalml.save(frugalml.quantize(...))` from Python: no spec to pass (the float model's, plus what
    quantizing changed, e.g. folded BatchNorm), and the files are the quantized format's, not the float
    module's state labelled fp32 (a codebook model used to come back as a dense 'torch-fp32' artifact)."""
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes).eval()
    cfg = QuantizeStage(kind="quantize", mode=mode, backend=backend, bits=bits, references=[])
    q = quantize(model, cfg, data, measure=measure_cfg)
    artifact.save(q, tmp_path / "q")
    info = artifact.read_info(tmp_path / "q")
    assert info["format"] == q.format != "torch-fp32"
    x = data.sample_input(8)
    assert torch.equal(artifact.load(tmp_path / "q")(x), q(x))

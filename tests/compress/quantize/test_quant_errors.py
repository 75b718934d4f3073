"""Bad input gives one clear FrugalError that says what to do instead."""

from __future__ import annotations

import json
import logging

import pydantic
import pytest
import torch.nn as nn
from tests.compress.quantize.test_quant_helpers import FAST_MEASURE, cnn, data, mlp, one_thread  # noqa: F401

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.compress.quantize.stage import build
from frugalml.data import DataConfig, load_data
from frugalml.errors import ArtifactError, ConfigError, DataError, UnsupportedError


class ConvOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.parametrize(
    "fields",
    [{"mode": "fp16", "backend": "onnxruntime"}, {"mode": "static", "bits": 4}, {"mode": "dynamic", "mixed_precision": True},
     {"mode": "qat", "backend": "onnxruntime"}, {"mode": "int3"}, {"mode": "static", "observer": "kl"}],
)  # fmt: skip
def test_invalid_configs_are_rejected(fields):
    with pytest.raises(pydantic.ValidationError):
        QuantizeStage(**fields)


def test_calibration_data_of_the_wrong_shape():
    model, spec = cnn()
    other = load_data(DataConfig(name="synthetic", synthetic_samples=40, synthetic_shape=(1, 8, 8)))
    with pytest.raises(DataError, match=r"input shape \[1, 8, 8\].*built for \[1, 12, 12\]"):
        quantize(model, QuantizeStage(mode="static"), other, spec=spec)
    mlp_model, _ = mlp()  # without a spec, the forward pass itself tells
    with pytest.raises(DataError, match="does not fit the model"):
        quantize(mlp_model, QuantizeStage(mode="static"), other)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "pt2e"])
def test_dynamic_mode_on_a_model_without_linear_layers(backend):
    with pytest.raises(UnsupportedError, match="use mode: static"):
        build(ConvOnly().eval(), QuantizeStage(mode="dynamic"), backend, data(), log=logging.getLogger("t"))


def test_weight_only_needs_linear_layers():
    with pytest.raises(UnsupportedError, match="Linear"):
        quantize(ConvOnly().eval(), QuantizeStage(mode="weight-only"), None)


def test_auto_reports_why_no_backend_works():
    with pytest.raises(UnsupportedError, match=r"no backend can quantize ConvOnly.*torch:.*onnxruntime:.*pt2e:"):
        quantize(ConvOnly().eval(), QuantizeStage(mode="dynamic", references=[]), data(), measure=FAST_MEASURE)


def test_static_needs_data_and_quantized_models_are_not_requantized():
    model, spec = cnn()
    with pytest.raises(ConfigError, match="needs data"):
        quantize(model, QuantizeStage(mode="static"), None)
    q = quantize(model, QuantizeStage(mode="bf16"), None)
    with pytest.raises(UnsupportedError, match="already quantized"):
        quantize(q, QuantizeStage(mode="static"), data())
    with pytest.raises(UnsupportedError, match="inference-only"):
        q.train()


def test_unfused_conv_bn_is_torch_backend_only():
    model, _ = cnn()
    with pytest.raises(UnsupportedError, match="fuse: false needs backend torch"):
        build(model, QuantizeStage(mode="static", fuse=False), "pt2e", data(), log=logging.getLogger("t"))


def test_missing_backend_library_or_engine(monkeypatch):
    import importlib.util

    model, _ = cnn()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    with pytest.raises(UnsupportedError, match=r"needs onnxruntime \(pip install onnxruntime\)"):
        build(model, QuantizeStage(mode="static"), "onnxruntime", data(), log=logging.getLogger("t"))
    from frugalml.compress.quantize import torch_ao

    monkeypatch.setattr(torch_ao, "supported_engines", lambda: ["qnnpack"])  # e.g. an ARM build
    with pytest.raises(UnsupportedError, match="x86 quantized engine"):
        build(model, QuantizeStage(mode="static"), "torch", data(), log=logging.getLogger("t"))


def test_corrupt_or_mismatched_quantized_artifacts(tmp_path):
    model, spec = cnn()
    q = build(model, QuantizeStage(mode="static", observer="minmax", calibration_batches=1), "torch", data(),
              log=logging.getLogger("t"))  # fmt: skip
    save_quantized(q, tmp_path / "a", spec)
    (tmp_path / "a" / "quantized.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="corrupt safetensors"):
        artifact.load(tmp_path / "a")

    save_quantized(q, tmp_path / "b", spec)  # a spec that no longer matches the saved state
    info = json.loads((tmp_path / "b" / "model.json").read_text())
    info["spec"]["kwargs"]["channels"] = [8, 16, 32]
    info["module_attributes"], info["float_shapes"] = {}, {}
    (tmp_path / "b" / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="re-run the quantize stage"):
        artifact.load(tmp_path / "b")

    onnx_q = build(model, QuantizeStage(mode="static", calibration_batches=1), "onnxruntime", data(),
                   log=logging.getLogger("t"))  # fmt: skip
    save_quantized(onnx_q, tmp_path / "c", spec)
    (tmp_path / "c" / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load it"):
        artifact.load(tmp_path / "c")

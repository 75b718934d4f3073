"""Bad input gives one clear FrugalError that says what to do instead."""

from __future__ import annotations

import json

import pydantic
import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.data import DataConfig, load_data
from frugalml.errors import ArtifactError, ConfigError, DataError, UnsupportedError


class ConvOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "fp16", "backend": "onnxruntime"}, "mode 'fp16' runs on backend torch"),
        ({"mode": "qat", "backend": "onnxruntime"}, "mode 'qat' runs on backend pt2e, torch"),
        ({"mode": "static", "bits": 4}, "bits: 4 does not fit mode 'static'"),
        ({"mode": "dynamic", "mixed_precision": True}, "mixed_precision needs mode: static"),
        ({"mode": "int3"}, "'static'"),
        ({"backend": "tensorrt"}, "'onnxruntime'"),
        ({"mode": "static", "observer": "kl"}, "'histogram'"),
        ({"mode": "qat", "qat": {"overrides": {"lr": "fast"}}}, "qat.overrides.lr"),
        ({"mode": "qat", "qat": {"overrides": {"epochz": 1}}}, "qat.overrides.epochz"),
    ],
)
def test_invalid_configs_are_rejected(fields, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        QuantizeStage(**fields)


def test_qat_overrides_that_do_not_fit_together_fail_before_any_work(cnn, data):
    model, _ = cnn
    cfg = QuantizeStage(
        name="int8-qat", mode="qat", backend="torch", qat={"epochs": 2, "overrides": {"warmup_epochs": 5}}
    )
    with pytest.raises(
        ConfigError, match=r"^stages\.int8-qat\.qat\.overrides.*warmup_epochs \(5\.0\) is longer"
    ):
        quantize(model, cfg, data)


def test_calibration_data_of_the_wrong_shape(cnn, mlp):
    model, spec = cnn
    other = load_data(DataConfig(name="synthetic", synthetic_samples=40, synthetic_shape=(1, 8, 8)))
    with pytest.raises(DataError, match=r"takes input \[1, 12, 12\].*gives \[1, 8, 8\]"):
        quantize(model, QuantizeStage(mode="static"), other, spec=spec)
    mlp_model, _ = mlp  # without a spec, the forward pass itself tells
    with pytest.raises(DataError, match="does not fit the model"):
        quantize(mlp_model, QuantizeStage(mode="static"), other)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "pt2e"])
def test_dynamic_mode_on_a_model_without_linear_layers(backend, make):
    with pytest.raises(UnsupportedError, match="use mode: static"):
        make(ConvOnly().eval(), backend, mode="dynamic")


def test_weight_only_needs_linear_or_conv_layers():
    no_weights = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LayerNorm(64))
    with pytest.raises(UnsupportedError, match="covers Linear and convolution layers"):
        quantize(no_weights.eval(), QuantizeStage(mode="weight-only"), None)


def test_auto_reports_why_no_backend_works(data, measure_cfg):
    with pytest.raises(
        UnsupportedError, match=r"no backend can quantize ConvOnly.*pt2e:.*torch:.*onnxruntime:"
    ):
        quantize(ConvOnly().eval(), QuantizeStage(mode="dynamic", references=[]), data, measure=measure_cfg)


def test_static_needs_data_and_quantized_models_are_not_requantized(cnn, data):
    model, _ = cnn
    with pytest.raises(ConfigError, match="needs data"):
        quantize(model, QuantizeStage(mode="static"), None)
    q = quantize(model, QuantizeStage(mode="bf16"), None)
    with pytest.raises(UnsupportedError, match=r"already quantized \(torch-bf16\); quantize the float model"):
        quantize(q, QuantizeStage(mode="static"), data)
    with pytest.raises(UnsupportedError, match="inference-only"):
        q.train()


def test_unfused_conv_bn_is_torch_backend_only(cnn, make):
    model, _ = cnn
    with pytest.raises(UnsupportedError, match="fuse: false needs backend torch"):
        make(model, "pt2e", mode="static", fuse=False)


def test_mixed_precision_needs_a_backend_that_keeps_float_layers(cnn, data, measure_cfg):
    model, _ = cnn
    cfg = QuantizeStage(mode="static", backend="onnxruntime", mixed_precision=True, references=[])
    with pytest.raises(UnsupportedError, match="mixed_precision needs a backend that keeps layers in float"):
        quantize(model, cfg, data, measure=measure_cfg)


def test_missing_backend_library_or_engine(cnn, make, monkeypatch):
    import importlib.util

    from frugalml.compress.quantize import torch_ao

    model, _ = cnn
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    with pytest.raises(
        UnsupportedError,
        match=r"^backend onnxruntime needs onnxruntime \(pip install onnxruntime\); "
        r"or use backend pt2e or torch$",
    ):
        make(model, "onnxruntime", mode="static")
    monkeypatch.setattr(torch_ao, "supported_engines", lambda: ["qnnpack"])  # e.g. an ARM build
    with pytest.raises(UnsupportedError, match="backend torch needs the x86 quantized engine"):
        make(model, "torch", mode="static")


def test_corrupt_or_mismatched_quantized_artifacts(cnn, make, tmp_path):
    model, spec = cnn
    q = make(model, "torch", mode="static", observer="minmax", calibration_batches=1)
    save_quantized(q, tmp_path / "a", spec)
    for f in (tmp_path / "a").glob("quantized.safetensors*"):  # packed, maybe zstd-wrapped
        f.write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="corrupt"):
        artifact.load(tmp_path / "a")

    save_quantized(q, tmp_path / "b", spec)  # a spec that no longer matches the saved state
    info = json.loads((tmp_path / "b" / "model.json").read_text())
    info["spec"]["kwargs"]["channels"] = [8, 16, 32]
    info["module_attributes"], info["float_shapes"] = {}, {}
    (tmp_path / "b" / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="re-run the quantize stage"):
        artifact.load(tmp_path / "b")

    info["quantization"] = "static"
    (tmp_path / "b" / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="quantization: missing or not a mapping"):
        artifact.load(tmp_path / "b")

    onnx_q = make(model, "onnxruntime", mode="static", calibration_batches=1)
    save_quantized(onnx_q, tmp_path / "c", spec)
    (tmp_path / "c" / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load it|not an ONNX model"):
        artifact.load(tmp_path / "c")

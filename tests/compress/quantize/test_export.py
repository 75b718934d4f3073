"""`frugalml.export.export`: deployable ONNX / PT2 files that match the in-memory model."""

from __future__ import annotations

import zipfile

import onnx
import pytest
import torch

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.export import export


@pytest.fixture
def float_dir(cnn, tmp_path):
    model, spec = cnn
    return artifact.save(model, tmp_path / "baseline", spec)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_float_artifact_exports_and_matches(float_dir, fmt, data):
    report = export(float_dir, fmt, data=data)
    assert report.path == float_dir.parent / f"baseline.{fmt}" and report.path.is_file()
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    assert report.batch_size == 64 and "top-1 agreement 100.0%" in report.summary()
    if fmt == "pt2":  # a zip archive without pickled example inputs
        archive = zipfile.ZipFile(report.path)
        assert not any("sample_inputs" in i.filename and i.file_size for i in archive.infolist())
        loaded = torch.export.load(str(report.path)).module()
        assert loaded(data.sample_input(3)).shape == (3, 4)  # dynamic batch


def test_onnx_int8_artifact_exports_its_quantized_graph(cnn, make, data, tmp_path):
    model, spec = cnn
    save_quantized(make(model, "onnxruntime", mode="static"), tmp_path / "q", spec)
    report = export(tmp_path / "q", "onnx", out=tmp_path / "deploy" / "m.onnx", data=data)
    # the artifact stores the graph and its initializers apart (packed); the export is the whole model
    assert report.path.read_bytes() == artifact.load(tmp_path / "q").onnx_bytes
    assert report.max_abs_diff == 0.0 and report.top1_agreement == 1.0
    with pytest.raises(UnsupportedError, match="--format onnx"):
        export(tmp_path / "q", "pt2")


@pytest.mark.parametrize("force_uint8", [False, True])
def test_pt2e_int8_exports_to_pt2_and_onnx(force_uint8, cnn, make, data, monkeypatch, tmp_path):
    """On CPUs without VNNI, ONNX Runtime's u8*s8 kernels saturate 16-bit sums (top-1 agreement 0.875
    with the graph it came from); there the export stores weights as uint8 (zero point 128), which
    ONNX Runtime runs with exact u8*u8 kernels. `force_uint8` checks that graph on any CPU."""
    from frugalml.compress.quantize import pt2e

    if force_uint8:
        monkeypatch.setattr(pt2e, "has_int8_dot", lambda: False)
    model, spec = cnn
    save_quantized(make(model, "pt2e", mode="static", observer="minmax"), tmp_path / "q", spec)
    for fmt in ("pt2", "onnx"):
        report = export(tmp_path / "q", fmt, data=data)
        assert report.top1_agreement >= 0.98 and report.max_abs_diff < 0.05, fmt  # ORT: integer kernels
    weight_types = {i.data_type for i in onnx.load(str(report.path)).graph.initializer}
    assert (onnx.TensorProto.INT8 in weight_types) is pt2e.has_int8_dot()
    assert (onnx.TensorProto.UINT8 in weight_types) is True  # activation zero points, and u8 weights


def test_half_precision_exports(cnn, data, tmp_path):
    model, spec = cnn
    save_quantized(quantize(model, QuantizeStage(mode="fp16"), None), tmp_path / "fp16", spec)
    save_quantized(quantize(model, QuantizeStage(mode="bf16"), None), tmp_path / "bf16", spec)
    assert export(tmp_path / "fp16", "onnx", data=data).top1_agreement >= 0.98
    assert export(tmp_path / "bf16", "pt2", data=data).max_abs_diff == 0.0
    with pytest.raises(UnsupportedError, match="no bf16"):
        export(tmp_path / "bf16", "onnx")


def test_export_bad_requests(float_dir, cnn, make, tmp_path):
    with pytest.raises(ConfigError, match="allowed: onnx, pt2"):
        export(float_dir, "tflite")
    with pytest.raises(ConfigError, match="inside the artifact directory"):
        export(float_dir, "onnx", out=float_dir / "model.onnx")
    with pytest.raises(ConfigError, match=r"takes \[1, 12, 12\]"):
        export(float_dir, "onnx", data=torch.zeros(2, 1, 8, 8))
    model, spec = cnn
    save_quantized(make(model, "torch", mode="dynamic"), tmp_path / "dyn", spec)
    with pytest.raises(UnsupportedError, match="backend: onnxruntime"):
        export(tmp_path / "dyn", "onnx")

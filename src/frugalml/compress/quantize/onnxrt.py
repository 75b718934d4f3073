"""Backend `onnxruntime`: export to ONNX, `quant_pre_process`, then ONNX Runtime's `quantize_static`
(QDQ, per-channel conv weights, calibrated with a CalibrationDataReader) or `quantize_dynamic`
(MatMul/Gemm/LSTM weights, activations quantized per batch at run time). Without VNNI, weights are
quantized to 7 bits (`reduce_range`): ONNX Runtime's u8*s8 kernels would saturate otherwise.

Artifact (format `onnx-int8`): the quantized `model.onnx` (a protobuf: no pickle) + model.json.
`OnnxModel` wraps an InferenceSession as an nn.Module so frugalml measures it like any model; it
also serves the fp32 ONNX Runtime reference (`runtime="onnxruntime-fp32"`).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._runtime import first_line, quiet
from frugalml.compress.quantize.base import QuantizeContext, QuantizedModel, float_skeleton, saved_settings
from frugalml.compress.quantize.interop import export_onnx, make_session, run_session
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.errors import ArtifactError, UnsupportedError
from frugalml.measure.env import has_int8_dot

FORMAT = "onnx-int8"
MODEL_FILE = "model.onnx"
_CALIBRATION = {"minmax": "MinMax", "histogram": "Entropy", "percentile": "Percentile"}
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "Attention"]


class OnnxModel(QuantizedModel):
    """An ONNX Runtime session as a module: tensor in, logits tensor out. The session uses as many
    intra-op threads as torch currently does, so `measure(threads=N)` times both runtimes alike."""

    format = FORMAT

    def __init__(
        self, onnx_bytes: bytes, cost_model: nn.Module, settings: dict, runtime: str = "onnxruntime-int8"
    ):
        super().__init__(runtime, cost_model, settings)
        self.onnx_bytes = onnx_bytes
        self._session: Any = None
        self._threads = 0

    def session(self) -> Any:
        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            self._session, self._threads = make_session(self.onnx_bytes, threads), threads
        return self._session

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return run_session(self.session(), x)

    def artifact(self) -> tuple[dict[str, bytes], dict]:
        return {MODEL_FILE: self.onnx_bytes}, {}

    def to_onnx(self, x: torch.Tensor) -> bytes:
        return self.onnx_bytes  # already the deployable graph

    def to_pt2(self, x: torch.Tensor) -> torch.export.ExportedProgram:
        raise UnsupportedError("an onnx-int8 artifact is an ONNX model; export it with --format onnx")


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, name: str, batches: list[torch.Tensor]) -> None:
        self._it = iter([{name: b.numpy().astype(np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # the Entropy/Percentile calibrators read the data once
        pass


def _quantize_onnx(float_onnx: bytes, settings: dict, batches: list[torch.Tensor] | None) -> bytes:
    """quant_pre_process, then ONNX Runtime's static (with `batches`) or dynamic quantization."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    common = {"per_channel": settings.get("per_channel", True), "reduce_range": not has_int8_dot()}
    with tempfile.TemporaryDirectory(prefix="frugal-ort-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(float_onnx)
        with quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            if batches is None:
                quantize_dynamic(
                    str(pre),
                    str(out),
                    op_types_to_quantize=_DYNAMIC_OPS,
                    weight_type=QuantType.QInt8,
                    **common,
                )
            else:
                reader = type("FrugalCalibration", (_Batches, CalibrationDataReader), {})("input", batches)
                method = getattr(CalibrationMethod, _CALIBRATION[settings.get("observer", "histogram")])
                quantize_static(
                    str(pre),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    extra_options={"CalibPercentile": settings.get("percentile", 99.99)},
                    **common,
                )
        return out.read_bytes()


def _export(model: nn.Module, example: torch.Tensor) -> bytes:
    try:
        return export_onnx(model, example)
    except UnsupportedError as e:
        raise UnsupportedError(f"backend onnxruntime: {e}; use backend torch or pt2e") from None


def float_runtime(model: nn.Module, example: torch.Tensor) -> OnnxModel:
    """The fp32 model under ONNX Runtime: one of the honest baselines quantized models must beat."""
    return OnnxModel(export_onnx(model, example), model, {"mode": "fp32"}, runtime="onnxruntime-fp32")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    about = "ONNX Runtime int8"
    modes = ("static", "dynamic")
    formats = (FORMAT,)

    def missing(self) -> str | None:
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                return f"{module} (pip install {module})"
        return None

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> OnnxModel:
        if settings["mode"] == "dynamic":
            if not any(isinstance(m, (nn.Linear, nn.LSTM)) for m in model.modules()):
                raise UnsupportedError(
                    f"backend onnxruntime: dynamic quantization covers Linear/LSTM layers and "
                    f"{type(model).__name__} has none; use mode: static"
                )
            return OnnxModel(_quantize_onnx(_export(model, ctx.example()), settings, None), model, settings)
        batches = ctx.batches()
        return OnnxModel(_quantize_onnx(_export(model, batches[0]), settings, batches), model, settings)

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> OnnxModel:
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: missing ONNX model file")
        settings = saved_settings(info, directory)
        model = OnnxModel(path.read_bytes(), float_skeleton(info, directory, trust_code), settings)
        try:
            model.session()
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first_line(e)})") from None
        return model


register_backend(OnnxRuntimeBackend())

"""Backend `onnxruntime`: export to ONNX, `quant_pre_process`, then ONNX Runtime's `quantize_static`
(QDQ, per-channel conv weights, calibrated with a CalibrationDataReader) or `quantize_dynamic`
(MatMul/Gemm/LSTM weights, activations quantized per batch at run time).

Artifact (format `onnx-int8`): the quantized `model.onnx` (a protobuf: no pickle) + model.json.
`OnnxModel` wraps an InferenceSession as an nn.Module so frugalml measures it like any model; it
also serves the fp32 ONNX Runtime reference (`runtime="onnxruntime-fp32"`).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from frugalml._io import atomic_write_bytes
from frugalml.artifact import Trust
from frugalml.compress.quantize._common import (
    QuantizedModel,
    cpu_has_vnni,
    native_stdout_silenced,
    quiet,
    skeleton,
    write_info,
)
from frugalml.errors import ArtifactError, UnsupportedError

FORMAT = "onnx-int8"
MODEL_FILE = "model.onnx"
OPSET = 17
_CALIBRATION = {"minmax": "MinMax", "histogram": "Entropy", "percentile": "Percentile"}
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "Attention"]


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Float ONNX with a dynamic batch axis. The TorchScript-based exporter is tried first: it is
    fast and folds BatchNorm into convs; the dynamo exporter is the fallback for what it cannot trace."""
    errors = []  # the caller passes an eval-mode model (pt2e graphs refuse .eval())
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            with quiet(), torch.no_grad():
                if dynamo:
                    torch.onnx.export(model, (example,), buf, input_names=["input"], output_names=["logits"],
                                      dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                      verbose=False)  # fmt: skip
                else:
                    with native_stdout_silenced():
                        torch.onnx.export(model, (example,), buf, input_names=["input"], output_names=["logits"],
                                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                                          opset_version=OPSET, dynamo=False)  # fmt: skip
            return buf.getvalue()
        except Exception as e:  # both exporters raise a wide range of internal types
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    raise UnsupportedError(
        f"backend onnxruntime: torch.onnx.export cannot export {type(model).__name__} ({'; '.join(errors)}); "
        "use backend torch or pt2e"
    )


def make_session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # spinning threads burn the cores between calls and distort timings of everything else
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class OnnxModel(QuantizedModel):
    """An ONNX Runtime session as a module: tensor in, logits tensor out. The session uses as many
    intra-op threads as torch currently does, so `measure(threads=N)` times both runtimes alike."""

    format = FORMAT

    def __init__(self, onnx_bytes: bytes, cost_model: nn.Module, recipe: dict, runtime: str = "onnxruntime-int8"):
        super().__init__(runtime, cost_model, recipe)
        self.onnx_bytes = onnx_bytes
        self._session: Any = None
        self._threads = 0

    def session(self) -> Any:
        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            self._session, self._threads = make_session(self.onnx_bytes, threads), threads
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self.session()
        feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(sess.run(None, feed)[0])

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / MODEL_FILE, self.onnx_bytes)
        write_info(directory, FORMAT, spec, self.frugal_cost_model, self.frugal_recipe, meta, files=[MODEL_FILE])
        return directory


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, name: str, batches: list[torch.Tensor]) -> None:
        self._it = iter([{name: b.numpy().astype(np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # the Entropy/Percentile calibrators read the data once
        pass


def _preprocess(float_onnx: bytes, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = tmp / "float.onnx", tmp / "pre.onnx"
    src.write_bytes(float_onnx)
    with quiet():
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    return dst


def quantize_static(model: nn.Module, recipe: dict, batches: list[torch.Tensor]) -> OnnxModel:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    reader_cls = type("FrugalCalibration", (_Batches, CalibrationDataReader), {})
    float_onnx = export_onnx(model, batches[0])
    observer = recipe.get("observer", "histogram")
    with tempfile.TemporaryDirectory(prefix="frugal-ort-") as tmp:
        pre = _preprocess(float_onnx, Path(tmp))
        out = Path(tmp) / "int8.onnx"
        with quiet():
            ort_quantize_static(
                str(pre), str(out), reader_cls("input", batches),
                quant_format=QuantFormat.QDQ, per_channel=recipe.get("per_channel", True),
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=not cpu_has_vnni(),
                calibrate_method=getattr(CalibrationMethod, _CALIBRATION[observer]),
                extra_options={"CalibPercentile": recipe.get("percentile", 99.99)},
            )  # fmt: skip
        return OnnxModel(out.read_bytes(), model, recipe)


def quantize_dynamic(model: nn.Module, recipe: dict, example: torch.Tensor) -> OnnxModel:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    if not any(isinstance(m, (nn.Linear, nn.LSTM)) for m in model.modules()):
        raise UnsupportedError(
            f"backend onnxruntime: dynamic quantization covers Linear/LSTM layers and {type(model).__name__} "
            "has none; use mode: static"
        )
    float_onnx = export_onnx(model, example)
    with tempfile.TemporaryDirectory(prefix="frugal-ort-") as tmp:
        pre = _preprocess(float_onnx, Path(tmp))
        out = Path(tmp) / "int8.onnx"
        with quiet():
            ort_quantize_dynamic(
                str(pre), str(out), op_types_to_quantize=_DYNAMIC_OPS, per_channel=recipe.get("per_channel", True),
                weight_type=QuantType.QInt8, reduce_range=not cpu_has_vnni(),
            )  # fmt: skip
        return OnnxModel(out.read_bytes(), model, recipe)


def float_runtime(model: nn.Module, example: torch.Tensor) -> OnnxModel:
    """The fp32 model under ONNX Runtime: one of the honest baselines quantized models must beat."""
    return OnnxModel(export_onnx(model, example), model, {"mode": "fp32"}, runtime="onnxruntime-fp32")


def load(directory: Path, info: dict, trust_code: Trust = False) -> OnnxModel:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ONNX model file")
    model = OnnxModel(path.read_bytes(), skeleton(info, directory, trust_code), dict(info["quantization"]))
    try:
        model.session()
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
    return model

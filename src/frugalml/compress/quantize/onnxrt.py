"""Backend `onnxruntime`: export to ONNX, `quant_pre_process`, then ONNX Runtime's `quantize_static`
(QDQ, per-channel conv weights, calibrated with a CalibrationDataReader) or `quantize_dynamic`
(MatMul/Gemm/LSTM weights, activations quantized per batch at run time); embedding tables are made
int8 per row before export (`embedding.Int8Embedding`), in both modes. Without
VNNI, weights are quantized to 7 bits (`reduce_range`): ONNX Runtime's u8*s8 kernels would saturate
otherwise. Models with named inputs (transformers) export one graph input per name, int64 ids kept;
static quantization of them calibrates on real batches and quantizes the matmuls only.

Artifact (format `onnx-int8`): the quantized `model.onnx` (a protobuf: no pickle) + model.json.
`OnnxModel` wraps an InferenceSession as an nn.Module so frugalml measures it like any model; it
also serves the fp32 ONNX Runtime reference (`runtime="onnxruntime-fp32"`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._runtime import first_line, quiet
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.embedding import embedding_note, has_embeddings, quantize_embeddings
from frugalml.compress.quantize.interop import export_onnx, make_session, run_session
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.data.features import Features
from frugalml.errors import ArtifactError, UnsupportedError
from frugalml.measure.env import has_int8_dot

FORMAT = "onnx-int8"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "initializers.safetensors"
_CALIBRATION = {"minmax": "MinMax", "histogram": "Entropy", "percentile": "Percentile"}
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "Attention"]


class OnnxModel(QuantizedModel):
    """An ONNX Runtime session as a module: tensor in, logits tensor out. The session uses as many
    intra-op threads as torch currently does, so `measure(threads=N)` times both runtimes alike."""

    format = FORMAT

    def __init__(self, onnx_bytes: bytes, cost_model: nn.Module, settings: dict, runtime: str | None = None):
        fp32 = settings.get("mode") == "fp32"
        super().__init__(runtime or ("onnxruntime-fp32" if fp32 else "onnxruntime-int8"), cost_model, settings)
        self.format = "onnx-fp32" if fp32 else FORMAT
        self.onnx_bytes = onnx_bytes
        self._session: Any = None
        self._threads = 0

    def session(self) -> Any:
        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            self._session, self._threads = make_session(self.onnx_bytes, threads), threads
        return self._session

    def run(self, x: Any) -> torch.Tensor:
        return run_session(self.session(), x)

    def artifact(self) -> tuple[dict[str, bytes | SafeTensors], dict]:
        graph, weights = split_initializers(self.onnx_bytes)
        return {MODEL_FILE: graph, WEIGHTS_FILE: SafeTensors(weights)}, {}

    def nonzero_params(self) -> int | None:
        """Nonzero weights counted in the graph's own initializers (int8 codes, int32 biases, float
        weights of what stayed float); scales, zero points and int64 shape constants are not weights.
        Not from the float cost model: loaded from an artifact, that is a zeroed skeleton."""
        _, tensors = split_initializers(self.onnx_bytes, min_elements=0)  # every numeric initializer
        count = sum(int(t.count_nonzero()) for name, t in tensors.items()
                    if t.dtype != torch.int64 and not any(w in name for w in ("scale", "zero_point")))
        return count or None

    def to_onnx(self, x: torch.Tensor) -> bytes:
        return self.onnx_bytes  # already the deployable graph

    def to_pt2(self, x: torch.Tensor) -> torch.export.ExportedProgram:
        raise UnsupportedError("an onnx-int8 artifact is an ONNX model; export it with --format onnx")


def split_initializers(onnx_bytes: bytes, min_elements: int = 256) -> tuple[bytes, dict[str, torch.Tensor]]:
    """The graph without its large initializers, and those as tensors: they are stored packed (a
    pruned model's zero int8 weights take no room), then put back on load."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(onnx_bytes)
    weights, kept = {}, []
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.size >= min_elements and array.dtype.kind in "iuf":
            weights[init.name] = torch.from_numpy(array.copy())
        else:
            kept.append(init)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto.SerializeToString(), weights


def merge_initializers(graph: bytes, weights: dict[str, torch.Tensor], where: Path) -> bytes:
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load_from_string(graph)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ArtifactError(f"{where}: not an ONNX model ({first_line(e)})") from None
    proto.graph.initializer.extend(numpy_helper.from_array(t.numpy(), name) for name, t in weights.items())
    return proto.SerializeToString()


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches: one float input named
    `input`, or every named input (token ids, masks) with its own dtype."""

    def __init__(self, batches: list[Any]) -> None:
        self._it = iter([b.numpy_feed() if isinstance(b, Features) else {"input": b.numpy().astype(np.float32)}
                         for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # the Entropy/Percentile calibrators read the data once
        pass


def _op_types(settings: dict, named_inputs: bool) -> list[str] | None:
    """What ONNX Runtime quantizes. Dynamic: weight matmuls (embedding tables are int8 already, see
    quantize). Static with named (text) inputs: matmuls only; quantizing the adds, softmax and layer
    norms of a transformer calibrates ranges across the attention mask's huge negative bias and wipes
    the signal out. Static on images: every op ONNX Runtime can quantize (None)."""
    if settings["mode"] == "dynamic":
        return _DYNAMIC_OPS
    return ["MatMul", "Gemm"] if named_inputs else None


def _pre_process(src: Path, pre: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference gives up on some graphs (e.g. transformers): skip it
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)


def _quantize_onnx(float_onnx: bytes, settings: dict, batches: list[Any] | None, named_inputs: bool = False) -> bytes:
    """quant_pre_process, then ONNX Runtime's static (with `batches`) or dynamic quantization."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    common = {"per_channel": settings.get("per_channel", True), "reduce_range": not has_int8_dot(),
              "op_types_to_quantize": _op_types(settings, named_inputs)}
    with tempfile.TemporaryDirectory(prefix="frugal-ort-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(float_onnx)
        # in the temporary folder: ONNX Runtime's shape inference writes `sym_shape_infer_temp.onnx`
        # and uuid-named external-data files into the working directory, which is the user's
        with quiet(), contextlib.chdir(tmp):
            _pre_process(src, pre)
            if batches is None:
                quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, **common)
            else:
                reader = type("FrugalCalibration", (_Batches, CalibrationDataReader), {})(batches)
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


def _export(model: nn.Module, example: Any) -> bytes:
    try:
        return export_onnx(model, example)
    except UnsupportedError as e:
        raise UnsupportedError(f"backend onnxruntime: {e}; use backend torch or pt2e") from None


def float_runtime(model: nn.Module, example: Any) -> OnnxModel:
    """The fp32 model under ONNX Runtime: one of the honest baselines quantized models must beat."""
    return OnnxModel(export_onnx(model, example), model, {"mode": "fp32"}, runtime="onnxruntime-fp32")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    about = "ONNX Runtime int8"
    modes = ("static", "dynamic")
    formats = (FORMAT, "onnx-fp32")
    smooths = True

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
        # embedding tables become int8 (per row) before export: ONNX Runtime's own Gather quantization
        # is per tensor, and without it they would stay float32 (half of a small transformer's bytes)
        graph = copy.deepcopy(model).eval()
        smoothing = None
        if settings.get("smooth") is not None:
            from frugalml.compress.quantize.smooth import smooth_linears

            smoothing = smooth_linears(graph, ctx.batches(), settings["smooth"])
            ctx.log.info("smooth (alpha %s): %d Linear(s) in %d group(s); largest outlier channel %.1fx -> %.1fx "
                         "the median", smoothing["alpha"], smoothing["linears"], smoothing["groups"],
                         smoothing["outlier_ratio_before"] or 0, smoothing["outlier_ratio_after"] or 0)
        if has_embeddings(graph):
            quantize_embeddings(graph)
            settings = {**settings, "embeddings": "int8"}
        if settings["mode"] == "dynamic":
            example = ctx.example()
            blob = _quantize_onnx(_export(graph, example), settings, None, isinstance(example, Features))
        else:
            batches = ctx.batches()
            blob = _quantize_onnx(_export(graph, batches[0]), settings, batches, isinstance(batches[0], Features))
        q = OnnxModel(blob, model, settings)
        note = embedding_note(graph)
        if note:
            q.frugal_report["embeddings"] = note
        if smoothing is not None:
            q.frugal_report["smooth"] = smoothing
        return q

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> OnnxModel:
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: missing ONNX model file")
        settings = saved_settings(info, directory)
        blob = path.read_bytes()
        if any((Path(directory) / n).is_file() for n in (WEIGHTS_FILE, WEIGHTS_FILE + ".zst")):
            blob = merge_initializers(blob, read_tensors(directory, WEIGHTS_FILE), path)
        model = OnnxModel(blob, float_skeleton(info, directory, trust_code), settings)
        try:
            model.session()
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first_line(e)})") from None
        return model


register_backend(OnnxRuntimeBackend())

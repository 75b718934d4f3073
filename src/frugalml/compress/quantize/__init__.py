"""Quantization: `quantize(model, QuantizeStage(...), data)` and the `quantize` stage.

One file per backend/mode: `torch_ao` (torch.ao, x86 engine), `pt2e` (torchao PT2E + inductor),
`onnxrt` (ONNX Runtime), `weight_only` (torchao int8/int4 weights), `cast` (fp16/bf16); `qat` and
`mixed` build on them, `select` measures candidates and the fp32 baselines, `stage` ties it together.

Every result is a `QuantizedModel`: measure it with
`measure(q.frugal_cost_model, data, predict=q, runtime=q.frugal_runtime)` and save it with
`save_quantized(q, dir, spec, meta)`; `frugalml.artifact.load(dir)` restores it (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from frugalml.artifact import register_format
from frugalml.compress.quantize import cast, onnxrt, pt2e, torch_ao, weight_only
from frugalml.compress.quantize._common import QuantizedModel
from frugalml.compress.quantize.config import QATConfig, QuantizeStage
from frugalml.compress.quantize.stage import quantize, quantize_stage

FORMATS = (pt2e.FORMAT, torch_ao.FORMAT, onnxrt.FORMAT, weight_only.FORMAT, "torch-fp16", "torch-bf16")


def is_quantized(model: nn.Module) -> bool:
    return isinstance(model, QuantizedModel)


def save_quantized(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Write a quantized model's artifact (its own files + model.json with `format`)."""
    if not isinstance(model, QuantizedModel):
        raise TypeError(f"save_quantized needs a QuantizedModel, got {type(model).__name__}; use frugalml.artifact.save")
    meta = {k: v for k, v in (meta or {}).items() if k not in ("format", "runtime")}
    return model.save(Path(directory), spec, meta)


_LOADERS = {pt2e.FORMAT: pt2e.load, torch_ao.FORMAT: torch_ao.load, onnxrt.FORMAT: onnxrt.load,
            weight_only.FORMAT: weight_only.load, "torch-fp16": cast.load, "torch-bf16": cast.load}
for _fmt, _load in _LOADERS.items():  # the pipeline saves any stage output with artifact.save_any
    register_format(_fmt, save_quantized, _load)

__all__ = [
    "FORMATS",
    "QATConfig",
    "QuantizeStage",
    "QuantizedModel",
    "is_quantized",
    "quantize",
    "quantize_stage",
    "save_quantized",
]

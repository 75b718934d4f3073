"""Quantization: `quantize(model, QuantizeStage(...), data)` and the `quantize` stage.

Backends (`registry.py`) implement one small protocol and register for the modes they support:
`pt2e` (torchao PT2E + inductor), `torch_ao` (torch.ao, x86 engine), `onnxrt` (ONNX Runtime),
`weight_only` (torchao int8/int4 weights) and `cast` (fp16/bf16) — the last two answer to
`backend: torch` for their modes. `qat` and `mixed` build on any backend, `select` measures
candidates and the fp32 baselines, `stage` ties it together. A new backend is one module with a
`register_backend(...)` line, named in `registry.BACKEND_MODULES` (and its artifact formats in
`frugalml.artifact.FORMAT_MODULES`).

Every result is a `QuantizedModel`: measure it with
`measure(q.frugal_cost_model, data, predict=q, runtime=q.frugal_runtime)` and save it with
`q.save(dir, spec, meta)`; `frugalml.artifact.load(dir)` restores it (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from frugalml.compress.quantize.base import QuantizedModel
from frugalml.compress.quantize.config import QATConfig, QuantizeStage
from frugalml.compress.quantize.registry import formats
from frugalml.compress.quantize.stage import quantize, quantize_stage


def is_quantized(model: nn.Module) -> bool:
    return isinstance(model, QuantizedModel)


def save_quantized(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Write a quantized model's artifact (its own files + model.json with `format`)."""
    if not isinstance(model, QuantizedModel):
        raise TypeError(
            f"save_quantized needs a QuantizedModel, got {type(model).__name__}; use frugalml.artifact.save"
        )
    return model.save(Path(directory), spec, meta)


__all__ = [
    "QATConfig",
    "QuantizeStage",
    "QuantizedModel",
    "formats",
    "is_quantized",
    "quantize",
    "quantize_stage",
    "save_quantized",
]

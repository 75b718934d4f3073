"""Backend `torch` for modes `fp16` / `bf16`: cast every weight; inputs are cast on the way in,
logits back to float32. On CPUs with AMX/AVX512-BF16, oneDNN runs bf16 convs and matmuls natively
(often faster than fp32); elsewhere the cast only halves the size.

Artifact (format `torch-fp16` / `torch-bf16`): the cast state_dict in safetensors + model.json.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.errors import ArtifactError, UnsupportedError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TENSORS = "model.safetensors"


class _Casting(nn.Module):
    """The deployed computation: floating inputs cast to the weights' dtype, logits back to float32.
    Integer inputs (token ids, attention masks) pass unchanged: fp16 holds integers exactly only up
    to 2048, so casting ids would look up the wrong embeddings."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, *inputs: Any) -> torch.Tensor:
        return self.module(*(_cast(x, self.dtype) for x in inputs)).float()


def _cast(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        return x
    return x.to(dtype=dtype)  # a Features batch casts its floating tensors only


class CastModel(QuantizedModel):
    def __init__(self, module: nn.Module, cost_model: nn.Module, settings: dict) -> None:
        super().__init__(f"torch-{settings['mode']}", cost_model, settings)
        self.format = f"torch-{settings['mode']}"
        self.dtype = DTYPES[settings["mode"]]
        self.module = module

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.exportable()(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        return {TENSORS: SafeTensors({k: v.clone() for k, v in self.module.state_dict().items()})}, {}

    def exportable(self) -> nn.Module:
        # in eval mode: exporters switch a module to eval and back, and "back" would reach the weights
        return _Casting(self.module, self.dtype).eval()

    def to_onnx(self, x: torch.Tensor) -> bytes:
        if self.dtype == torch.bfloat16:
            raise UnsupportedError(
                "ONNX Runtime's CPU provider has no bf16 conv/matmul kernels; export this artifact with "
                "--format pt2, or quantize with mode: fp16 for ONNX"
            )
        return super().to_onnx(x)


class CastBackend(Backend):
    name = "torch"
    about = "a plain fp16/bf16 cast"
    modes = ("fp16", "bf16")
    formats = ("torch-fp16", "torch-bf16")

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> CastModel:
        return CastModel(copy.deepcopy(model).eval().to(DTYPES[settings["mode"]]), model, settings)

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> CastModel:
        settings = {**saved_settings(info, directory), "mode": info["format"].removeprefix("torch-")}
        tensors = read_tensors(directory, TENSORS)
        float_model = float_skeleton(info, directory, trust_code)
        module = copy.deepcopy(float_model).to(DTYPES[settings["mode"]])
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise ArtifactError(
                f"{directory}: weights do not fit the model ({str(e).splitlines()[0]})"
            ) from None
        return CastModel(module.eval(), float_model, settings)


register_backend(CastBackend())

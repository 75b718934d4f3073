"""Modes `fp16` / `bf16`: cast every weight; inputs are cast on the way in, logits back to float32.
On CPUs with AMX/AVX512-BF16, oneDNN runs bf16 convs and matmuls natively (often faster than fp32);
elsewhere the cast only halves the size.

Artifact (format `torch-fp16` / `torch-bf16`): the cast state_dict in safetensors + model.json.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._common import (
    QuantizedModel,
    read_tensors,
    save_tensors,
    skeleton,
    write_info,
)
from frugalml.errors import ArtifactError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TENSORS = "model.safetensors"


class CastModel(QuantizedModel):
    def __init__(self, module: nn.Module, cost_model: nn.Module, recipe: dict) -> None:
        super().__init__(f"torch-{recipe['mode']}", cost_model, recipe)
        self.format = f"torch-{recipe['mode']}"
        self.dtype = DTYPES[recipe["mode"]]
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x.to(self.dtype)).float()

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory, TENSORS, {k: v.clone() for k, v in self.module.state_dict().items()})
        write_info(directory, self.format, spec, self.frugal_cost_model, self.frugal_recipe, meta)
        return directory


def cast(model: nn.Module, recipe: dict) -> CastModel:
    return CastModel(copy.deepcopy(model).eval().to(DTYPES[recipe["mode"]]), model, recipe)


def load(directory: Path, info: dict, trust_code: Trust = False) -> CastModel:
    recipe = dict(info["quantization"])
    float_model = skeleton(info, directory, trust_code)
    module = copy.deepcopy(float_model).to(DTYPES[recipe["mode"]])
    try:
        module.load_state_dict(read_tensors(Path(directory), TENSORS), strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory}: weights do not fit the model ({str(e).splitlines()[0]})") from None
    return CastModel(module.eval(), float_model, recipe)

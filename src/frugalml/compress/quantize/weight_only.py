"""Mode `weight-only`: torchao int8 (per output row) or int4 (grouped) weights for Linear layers;
activations stay float. It saves memory and memory bandwidth — a win for large Linear-heavy models
at batch 1, not for small models whose weights already sit in cache (there the dequantization
costs more than it saves; `frugal` reports that honestly).

Artifact (format `torchao-weight-only`): torchao's own safetensors flattening of its tensor
subclasses (an allow-listed set of types: no pickle); loading re-applies the recipe to the float
skeleton and assigns the saved tensors.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn

from frugalml._io import save_tensors_atomic
from frugalml.artifact import Trust
from frugalml.compress.quantize._common import QuantizedModel, import_torchao, quiet, skeleton, write_info
from frugalml.errors import ArtifactError, UnsupportedError

FORMAT = "torchao-weight-only"
TENSORS = "model.safetensors"
GROUPS = (128, 64, 32, 16)


def _groups(model: nn.Module, bits: int, group_size: int | None) -> dict[str, int | None]:
    """Linear layer name -> int4 group size (None for int8, which is per row); skips layers no
    group divides."""
    out: dict[str, int | None] = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        if bits == 8:
            out[name] = None
            continue
        choices = (group_size,) if group_size else GROUPS
        g = next((g for g in choices if m.in_features % g == 0), None)
        if g is not None:
            out[name] = g
    return out


def _apply(model: nn.Module, recipe: dict) -> dict[str, int | None]:
    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

    layers = recipe.get("layers")
    if layers is None:
        layers = _groups(model, recipe.get("bits", 8), recipe.get("group_size"))
    for g in sorted({g for g in layers.values() if g is not None}) or [None]:
        chosen = {n for n, lg in layers.items() if lg == g}
        if not chosen:
            continue
        if g is None:
            # set_inductor_config=False: torchao would otherwise change global compiler settings
            config = Int8WeightOnlyConfig(set_inductor_config=False)
        else:
            config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g))
        with quiet():
            quantize_(model, config, filter_fn=lambda m, fqn, chosen=chosen: fqn in chosen)
    return layers


class WeightOnlyModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, recipe: dict) -> None:
        super().__init__(f"torchao-int{recipe.get('bits', 8)}-weight-only", cost_model, recipe)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, metadata = flatten_tensor_state_dict(self.module.state_dict())
        save_tensors_atomic(tensors, directory / TENSORS, metadata=metadata)
        write_info(directory, FORMAT, spec, self.frugal_cost_model, self.frugal_recipe, meta)
        return directory


def quantize_weight_only(model: nn.Module, recipe: dict) -> WeightOnlyModel:
    recipe = dict(recipe)
    module = copy.deepcopy(model).eval()
    layers = _groups(module, recipe.get("bits", 8), recipe.get("group_size"))
    if not layers:
        what = "Linear layers" if recipe.get("bits", 8) == 8 else "Linear layers whose in_features a group size divides"
        raise UnsupportedError(
            f"weight-only quantization covers {what} and {type(model).__name__} has none; "
            "use mode: static (convolutions) or set group_size"
        )
    recipe["layers"] = _apply(module, {**recipe, "layers": layers})
    return WeightOnlyModel(module, model, recipe)


def load(directory: Path, info: dict, trust_code: Trust = False) -> WeightOnlyModel:
    from safetensors import safe_open
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    path = Path(directory) / TENSORS
    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    recipe = dict(info["quantization"])
    float_model = skeleton(info, directory, trust_code)
    module = copy.deepcopy(float_model)
    _apply(module, recipe)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        state = unflatten_tensor_state_dict(tensors, metadata)
        if isinstance(state, tuple):  # some torchao versions also return the leftover entries
            state = state[0]
        module.load_state_dict(state, assign=True, strict=True)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: cannot restore weight-only tensors ({str(e).splitlines()[0][:200]})") from None
    return WeightOnlyModel(module.eval(), float_model, recipe)

"""Backend `torch` for mode `weight-only`: torchao int8 (per output row) or int4 (grouped) weights for
Linear layers; activations stay float. It saves memory and memory bandwidth — a win for large
Linear-heavy models at batch 1, not for small models whose weights already sit in cache (there the
dequantization costs more than it saves; `frugal` reports that honestly).

Artifact (format `torchao-weight-only`): torchao's own safetensors flattening of its tensor
subclasses (an allow-listed set of types: no pickle); loading re-applies the settings to the float
skeleton and assigns the saved tensors.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._runtime import first_line, import_torchao, quiet
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    saved_settings,
)
from frugalml.compress.quantize.registry import Backend, register_backend
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


def _apply(model: nn.Module, layers: dict[str, int | None]) -> None:
    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

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


class WeightOnlyModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, settings: dict) -> None:
        super().__init__(f"torchao-int{settings.get('bits', 8)}-weight-only", cost_model, settings)
        self.module = module

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        return {TENSORS: SafeTensors(*flatten_tensor_state_dict(self.module.state_dict()))}, {}


class WeightOnlyBackend(Backend):
    name = "torch"
    about = "torchao weight-only"
    modes = ("weight-only",)
    formats = (FORMAT,)

    def missing(self) -> str | None:
        return None if importlib.util.find_spec("torchao") else "torchao (pip install torchao)"

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> WeightOnlyModel:
        module = copy.deepcopy(model).eval()
        bits = settings.get("bits", 8)
        layers = _groups(module, bits, settings.get("group_size"))
        if not layers:
            what = "Linear layers" if bits == 8 else "Linear layers whose in_features a group size divides"
            raise UnsupportedError(
                f"weight-only quantization covers {what} and {type(model).__name__} has none; "
                "use mode: static (convolutions) or set group_size"
            )
        _apply(module, layers)
        return WeightOnlyModel(module, model, {**settings, "layers": layers})

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> WeightOnlyModel:
        from safetensors import safe_open
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        path = Path(directory) / TENSORS
        if not path.is_file():
            raise ArtifactError(f"{path}: missing weights file")
        settings = saved_settings(info, directory)
        float_model = float_skeleton(info, directory, trust_code)
        module = copy.deepcopy(float_model)
        _apply(module, settings.get("layers") or {})
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
            state = unflatten_tensor_state_dict(tensors, metadata)
            if isinstance(state, tuple):  # some torchao versions also return the leftover entries
                state = state[0]
            module.load_state_dict(state, assign=True, strict=True)
        except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: cannot restore weight-only tensors ({first_line(e)})") from None
        return WeightOnlyModel(module.eval(), float_model, settings)


register_backend(WeightOnlyBackend())

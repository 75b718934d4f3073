"""Backend `torch` for mode `weight-only`: int8 (per output row) or int4 (grouped) weights, activations
stay float. It saves memory and memory bandwidth — a win for large Linear-heavy models at batch 1,
not for small models whose weights already sit in cache (there the dequantization costs more than it
saves; `frugal` reports that honestly).

- Linear layers go through torchao (`Int8WeightOnlyConfig`, `IntxWeightOnlyConfig` with a group size
  that divides in_features): its CPU kernels multiply with int8 weights directly.
- Convolutions, and Linear layers no int4 group size divides, get `DequantWeight`: int8 codes plus
  per-group scales, rows zero-padded to a whole number of groups (the padding is stored as zeros,
  which the packed storage does not keep), dequantized on the fly. Which layers took which path, and
  how much padding, is in the settings and the stage report.

Artifact (format `torchao-weight-only`): one packed safetensors file (torchao's flattening of its tensor
subclasses: no pickle; int4 codes land in 4-bit palettes, i.e. two per byte); loading re-applies the
settings to the float skeleton and assigns the saved tensors.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalml.artifact import Trust
from frugalml.compress.quantize._runtime import first_line, import_torchao, quiet
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.embedding import embedding_note, has_embeddings, quantize_embeddings
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.data.features import as_args
from frugalml.errors import ArtifactError, UnsupportedError

FORMAT = "torchao-weight-only"
TENSORS = "model.safetensors"
GROUPS = (128, 64, 32, 16)
CONVS = (nn.Conv1d, nn.Conv2d)


class DequantWeight(nn.Module):
    """A Linear/Conv whose weight is stored as int8 codes (`bits` wide) and per-group scales; the float
    weight is rebuilt on every call (symmetric, so zeros stay exactly zero)."""

    def __init__(self, layer: nn.Module, bits: int, group: int) -> None:
        super().__init__()
        self.kind = "conv" if isinstance(layer, CONVS) else "linear"
        self.weight_shape = list(layer.weight.shape)
        self.bits, self.group = bits, group
        self.conv_dims = layer.weight.dim() - 2
        for attr in ("stride", "padding", "dilation", "groups"):
            if hasattr(layer, attr):
                setattr(self, attr, getattr(layer, attr))
        rows, cols = self.weight_shape[0], math.prod(self.weight_shape[1:])
        padded = math.ceil(cols / group) * group
        self.padding_cols = padded - cols
        self.register_buffer("qweight", torch.zeros(rows, padded, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(rows, padded // group))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)

    @torch.no_grad()
    def quantize_from(self, weight: torch.Tensor) -> DequantWeight:
        rows = weight.shape[0]
        w = F.pad(weight.detach().reshape(rows, -1).float(), (0, self.padding_cols))
        grouped = w.view(rows, -1, self.group)
        qmax = 2 ** (self.bits - 1) - 1
        scales = grouped.abs().amax(-1).clamp(min=1e-12) / qmax
        self.qweight.copy_(torch.round(grouped / scales[..., None]).clamp(-qmax - 1, qmax).view(rows, -1))
        self.scales.copy_(scales)
        return self

    def dequantized(self) -> torch.Tensor:
        rows = self.weight_shape[0]
        w = (self.qweight.view(rows, -1, self.group).float() * self.scales[..., None]).view(rows, -1)
        return w[:, : w.shape[1] - self.padding_cols].reshape(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized()
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        conv = F.conv2d if self.conv_dims == 2 else F.conv1d
        return conv(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def plan(model: nn.Module, bits: int, group_size: int | None) -> dict[str, dict]:
    """Layer name -> how it is quantized: torchao (Linear, a group dividing its width) or dequant
    (convolutions; int4 Linear layers no group divides, padded). Returned as JSON for the settings."""
    out: dict[str, dict] = {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, *CONVS)):
            continue
        cols = math.prod(m.weight.shape[1:])
        if bits == 8 and isinstance(m, nn.Linear):
            out[name] = {"path": "torchao", "group": None}
            continue
        choices = (group_size,) if group_size else GROUPS
        g = next((g for g in choices if cols % g == 0), None)
        if g is not None and isinstance(m, nn.Linear):
            out[name] = {"path": "torchao", "group": g}
            continue
        group = cols if bits == 8 else (g or min(group_size or 32, cols))  # int8 convs: one scale per row
        out[name] = {"path": "dequant", "group": group, "padding": math.ceil(cols / group) * group - cols}
    return out


def _apply(model: nn.Module, layers: dict[str, dict], bits: int, weights: bool = True) -> None:
    ours = {n: e for n, e in layers.items() if e["path"] == "dequant"}
    for name, entry in ours.items():
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        layer = getattr(owner, leaf)
        q = DequantWeight(layer, bits, entry["group"])
        setattr(owner, leaf, q.quantize_from(layer.weight) if weights else q)
    torchao = {n: e["group"] for n, e in layers.items() if e["path"] == "torchao"}
    if not torchao:
        return
    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

    for g in sorted({g for g in torchao.values() if g is not None}) + ([None] if None in torchao.values() else []):
        chosen = {n for n, lg in torchao.items() if lg == g}
        # set_inductor_config=False: torchao would otherwise change global compiler settings
        config = (Int8WeightOnlyConfig(set_inductor_config=False) if g is None
                  else IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g)))
        with quiet():
            quantize_(model, config, filter_fn=lambda m, fqn, chosen=chosen: fqn in chosen)


class WeightOnlyModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, settings: dict) -> None:
        super().__init__(f"torch-int{settings.get('bits', 8)}-weight-only", cost_model, settings)
        self.module = module

    def run(self, x: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*as_args(x))

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        return {TENSORS: SafeTensors(*flatten_tensor_state_dict(self.module.state_dict()))}, {}


class WeightOnlyBackend(Backend):
    name = "torch"
    about = "int8/int4 weight-only (torchao for Linear, dequantized convolutions)"
    modes = ("weight-only",)
    formats = (FORMAT,)

    def missing(self) -> str | None:
        return None if importlib.util.find_spec("torchao") else "torchao (pip install torchao)"

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> WeightOnlyModel:
        module = copy.deepcopy(model).eval()
        bits = settings.get("bits", 8)
        layers = plan(module, bits, settings.get("group_size"))
        if not layers:
            raise UnsupportedError(
                f"weight-only quantization covers Linear and convolution layers and {type(model).__name__} has none"
            )
        _apply(module, layers, bits)
        if has_embeddings(module):  # the tables are weights too: int8 per row (int4 would cost fidelity)
            quantize_embeddings(module)
            settings = {**settings, "embeddings": "int8"}
        q = WeightOnlyModel(module, model, {**settings, "layers": layers})
        note = embedding_note(module)
        if note:
            q.frugal_report["embeddings"] = note
        padded = {n: e["padding"] for n, e in layers.items() if e.get("padding")}
        if padded:
            note = (f"int{bits} groups do not divide the width of {len(padded)} layer(s); their rows are "
                    f"zero-padded to whole groups: {', '.join(f'{n} (+{p})' for n, p in list(padded.items())[:6])}")
            ctx.log.info("weight-only: %s", note)
            q.frugal_report["notes"] = [note]
        return q

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> WeightOnlyModel:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        from frugalml.compress.storage.packed import file_metadata

        path = Path(directory) / TENSORS
        settings = saved_settings(info, directory)
        float_model = float_skeleton(info, directory, trust_code)
        module = copy.deepcopy(float_model)
        tensors, metadata = read_tensors(directory, TENSORS), file_metadata(path)
        try:
            _apply(module, settings.get("layers") or {}, settings.get("bits", 8), weights=False)
            if settings.get("embeddings") == "int8":
                quantize_embeddings(module, weights=False)
            state = unflatten_tensor_state_dict(tensors, metadata)
            if isinstance(state, tuple):  # some torchao versions also return the leftover entries
                state = state[0]
            module.load_state_dict(state, assign=True, strict=True)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: cannot restore weight-only tensors ({first_line(e)})") from None
        return WeightOnlyModel(module.eval(), float_model, settings)


register_backend(WeightOnlyBackend())

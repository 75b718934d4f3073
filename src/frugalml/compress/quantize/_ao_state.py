"""torch.ao quantized state as plain tensors + JSON (no pickle): quantized tensors become their
integer representation plus scales/zero points; packed recurrent weights go through
`_weight_bias()`/`set_weight_bias()`; module state versions are kept so modules read their layout."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.errors import ArtifactError


def _rnn_modules(module: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import GRU, LSTM

    return {n: m for n, m in module.named_modules() if isinstance(m, (LSTM, GRU))}


def _encode(key: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "value": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return {"kind": "tuple", "items": [_encode(f"{key}#{i}", v, tensors) for i, v in enumerate(value)]}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot store state entry {key!r} of type {type(value).__name__}")
    if not value.is_quantized:
        tensors[key] = value.detach()
        return {"kind": "tensor"}
    tensors[key] = value.int_repr()
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return {"kind": "qtensor", "scale": value.q_scale(), "zero_point": value.q_zero_point()}
    scales = value.q_per_channel_scales()  # float64/int64 in memory; observers made them in 32 bits
    narrow = scales.float()
    tensors[f"{key}#scales"] = narrow if torch.equal(narrow.double(), scales) else scales
    tensors[f"{key}#zero_points"] = value.q_per_channel_zero_points().int()
    return {"kind": "qtensor", "axis": value.q_per_channel_axis()}


def _decode(key: str, entry: dict, tensors: dict[str, torch.Tensor]) -> Any:
    kind = entry["kind"]
    if kind == "none":
        return None
    if kind == "dtype":
        return getattr(torch, entry["value"])
    if kind == "tuple":
        return tuple(_decode(f"{key}#{i}", e, tensors) for i, e in enumerate(entry["items"]))
    if kind == "tensor":
        return tensors[key]
    ints = tensors[key]
    if "axis" in entry:
        return torch._make_per_channel_quantized_tensor(
            ints, tensors[f"{key}#scales"].double(), tensors[f"{key}#zero_points"].long(), entry["axis"]
        )
    return torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])


def encode_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {"state": {}, "rnn": {}}
    rnns = _rnn_modules(module)
    state = module.state_dict()
    # per-module state versions: quantized modules read their saved layout from them on load
    layout["versions"] = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    for key, value in state.items():
        if any(key.startswith(f"{n}._all_weight_values") for n in rnns):
            continue  # torchbind packed params: stored through _weight_bias() below
        layout["state"][key] = _encode(key, value, tensors)
    for name, rnn in rnns.items():
        wb = rnn._weight_bias()
        flat = {**wb["weight"], **wb["bias"]}
        layout["rnn"][name] = {k: _encode(f"{name}.rnn.{k}", v, tensors) for k, v in flat.items()}
    return tensors, layout


def decode_state(module: nn.Module, tensors: dict[str, torch.Tensor], layout: dict, directory: Path) -> None:
    try:
        state = OrderedDict((k, _decode(k, e, tensors)) for k, e in layout["state"].items())
        state._metadata = OrderedDict(layout.get("versions", {}))  # type: ignore[attr-defined]
        rnn_state = {
            name: {k: _decode(f"{name}.rnn.{k}", e, tensors) for k, e in entries.items()}
            for name, entries in layout["rnn"].items()
        }
    except (KeyError, RuntimeError, TypeError) as e:
        raise ArtifactError(f"{directory}: quantized state is incomplete or corrupt ({e})") from None
    rnns = _rnn_modules(module)
    for key, value in module.state_dict().items():  # rebuilt packed params, replaced by set_weight_bias
        if any(key.startswith(f"{n}._all_weight_values") for n in rnns):
            state[key] = value
    try:
        result = module.load_state_dict(state, strict=False)
        problems = [*result.missing_keys[:3], *result.unexpected_keys[:3]]
    except (KeyError, RuntimeError) as e:  # quantized modules index the state dict directly
        problems = [str(e).splitlines()[0][:120]]
    if problems or set(rnns) != set(rnn_state):
        raise ArtifactError(
            f"{directory}: saved quantized state does not fit the rebuilt model ({problems or 'recurrent layers'}); "
            "re-run the quantize stage"
        )
    for name, wb in rnn_state.items():
        rnns[name].set_weight_bias(wb)

"""What a saved model needs besides its tensors: the plain attributes of its submodules (channel
counts, groups, heads changed by structured pruning) and parameters of the saved shapes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

_ATTR_TYPES = (int, float, bool, str, type(None))


def plain_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        attrs = {}
        for k, v in vars(mod).items():
            if k.startswith("_") or k == "training" or k.startswith("frugal_"):
                continue
            if isinstance(v, _ATTR_TYPES) or (
                isinstance(v, (tuple, list)) and all(isinstance(e, (int, float, bool)) for e in v)
            ):
                attrs[k] = list(v) if isinstance(v, tuple) else v
        if attrs:
            out[name] = attrs
    return out


def restore_attributes(model: nn.Module, attrs: dict[str, dict[str, Any]]) -> None:
    mods = dict(model.named_modules())
    for name, a in attrs.items():
        mod = mods.get(name)
        if mod is None:
            continue
        for k, v in a.items():
            cur = getattr(mod, k, None)
            if isinstance(cur, (nn.Module, torch.Tensor)) or callable(cur):
                continue  # model.json only sets plain values, never replaces modules or methods
            setattr(mod, k, tuple(v) if isinstance(cur, tuple) and isinstance(v, list) else v)


def reshape_to(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give parameters/buffers the saved shapes (structured pruning changes them)."""
    for key, t in tensors.items():
        mod_name, _, leaf = key.rpartition(".")
        try:
            mod = model.get_submodule(mod_name) if mod_name else model
        except AttributeError:
            continue
        cur = getattr(mod, leaf, None)
        if isinstance(cur, torch.Tensor) and cur.shape != t.shape:
            if isinstance(cur, nn.Parameter):
                setattr(mod, leaf, nn.Parameter(torch.empty_like(t), requires_grad=cur.requires_grad))
            else:
                mod._buffers[leaf] = torch.empty_like(t)

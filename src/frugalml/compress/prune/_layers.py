"""Which layers a pruning method touches, and how much of the model there is: layer selection by
name (`ignore`/`targets`), the weight tensors magnitude masks may zero, the classifier every method
keeps whole, MAC/parameter counts and the zero-fraction metrics of the mask methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from frugalml.errors import ConfigError, UnsupportedError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase, nn.MultiheadAttention)
Param = tuple[str, nn.Module, str]  # (layer name, module, parameter name)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def check_layer_names(model: nn.Module, names: Sequence[str] | None, key: str) -> None:
    """Every name must be a submodule (a container selects everything inside it)."""
    if not names:
        return
    known = [n for n, _ in model.named_modules() if n]
    for name in names:
        if not any(_matches(k, [name]) for k in known):
            layers = [n for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
            shown = ", ".join(layers[:8]) + (f", ... ({len(layers)} layers)" if len(layers) > 8 else "")
            raise ConfigError(f"prune.{key}: the model has no layer named {name!r}; valid layers: {shown}")


def selected(name: str, targets: Sequence[str] | None, ignore: Sequence[str]) -> bool:
    return (targets is None or _matches(name, targets)) and not _matches(name, ignore)


def weight_params(model: nn.Module, targets: Sequence[str] | None, ignore: Sequence[str]) -> list[Param]:
    """(layer name, module, parameter name) of every weight matrix/kernel that magnitude pruning may
    zero: conv and linear weights, recurrent input/hidden matrices, fused attention projections.
    Biases and norm parameters are left alone (few, and sensitive)."""
    out = []
    for name, mod in model.named_modules():
        if not selected(name, targets, ignore):
            continue
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            pnames = ["weight"]
        elif isinstance(mod, nn.RNNBase):
            pnames = [p for p in mod._flat_weights_names if p.startswith("weight_")]
        elif isinstance(mod, nn.MultiheadAttention):
            fused = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
            pnames = [p for p in fused if getattr(mod, p, None) is not None]
        else:
            continue
        out += [(name, mod, p) for p in pnames]
    return out


def masked_weights(model: nn.Module, targets: Sequence[str] | None, ignore: Sequence[str]) -> list[Param]:
    """The weights a mask method prunes; a selection that leaves none is the user's to fix."""
    params = weight_params(model, targets, ignore)
    if not params:
        raise ConfigError("prune: targets/ignore leave no conv, linear, recurrent or attention weights to prune")
    return params


def classifier(model: nn.Module, num_classes: int) -> tuple[str, nn.Module]:
    """The layer producing the logits: the last Linear/Conv with `num_classes` outputs."""
    found = None
    for name, mod in model.named_modules():
        outs = getattr(mod, "out_features", getattr(mod, "out_channels", None))
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)) and outs == num_classes:
            found = (name, mod)
    if found is None:
        raise UnsupportedError(
            f"cannot find the classifier (a Linear/Conv with {num_classes} outputs) to keep intact; "
            "name it in prune.ignore"
        )
    return found


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    from frugalml.measure import count_flops

    was_training = model.training
    model.eval()
    try:
        return int(count_flops(model, example)["macs"])
    finally:
        model.train(was_training)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def zero_metrics(model: nn.Module, params: list[Param]) -> dict:
    """Sparsity metrics of a mask method: zeros among the pruned tensors, in the whole model, per tensor."""
    total = sum(getattr(m, p).numel() for _, m, p in params)
    zeros = sum(int((getattr(m, p) == 0).sum()) for _, m, p in params)
    model_total = param_count(model)
    model_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {
        "sparsity": round(zeros / max(total, 1), 6),
        "sparsity_meaning": "fraction of zeros in the pruned weight tensors",
        "model_sparsity": round(model_zeros / max(model_total, 1), 6),
        "pruned_tensors": {f"{n}.{p}": round(float((getattr(m, p) == 0).float().mean()), 4) for n, m, p in params},
    }

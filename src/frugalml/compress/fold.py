"""BatchNorm folding: an eval-mode BatchNorm after a convolution is an affine map per channel, so it can
live in the convolution's weight and bias (W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps)
+ beta). The model computes the same function with fewer tensors — what a compact artifact wants
(four BatchNorm tensors per layer cost more than the layer's surviving weights at 95% sparsity) —
and zeros stay zeros.

The pairs are found on the torch.fx graph (a conv whose only user is a BatchNorm). The ModelSpec
records them under `fold_bn` ({batchnorm: conv}); `apply_spec` rebuilds the folded architecture on
load (the BatchNorm becomes an Identity, the conv gets a bias), via `frugalml.artifact.SPEC_EXTENSIONS`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.errors import ArtifactError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """{batchnorm name: conv name} for every BatchNorm fed only by a convolution (empty if the model
    cannot be traced: nothing is folded then). A conv or BatchNorm module called at more than one
    place is left alone: folding it for one call would change the other."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - fx raises many types for untraceable models
        return {}
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), CONVS)
                and len(src.users) == 1 and calls[node.target] == 1 and calls[src.target] == 1):
            pairs[node.target] = src.target
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> dict[str, str]:
    """Fold every conv -> BatchNorm pair of `model` in place; returns the pairs folded."""
    pairs = conv_bn_pairs(model)
    for bn_name, conv_name in pairs.items():
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.weight.add_(0.0)  # -0.0 from a negative scale is a zero like any other
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
        _set(model, bn_name, nn.Identity())
    return pairs


def apply_spec(model: nn.Module, pairs: dict, where: str | Path) -> nn.Module:
    """The folded architecture of a freshly built model (weights come after): Identity for each
    BatchNorm, a bias for its conv. Called by `frugalml.artifact.build_from_spec`."""
    for bn_name, conv_name in pairs.items():
        try:
            conv = model.get_submodule(conv_name)
            model.get_submodule(bn_name)
        except AttributeError as e:
            raise ArtifactError(f"{where}: spec.fold_bn.{bn_name}: no such layer in the model ({e})") from None
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        _set(model, bn_name, nn.Identity())
    return model

"""Freezing and layer groups: which parts of a network train, at which learning rate.

A network is seen as layer groups from input to output (a model may define `layer_groups()`; else
the children of its `features` Sequential; else its top-level children) plus its classifier, the
last `nn.Linear`. `freeze(model, unfreeze, lr_decay)` leaves the classifier and the top `unfreeze`
groups trainable, with group d levels below the classifier at lr * lr_decay**d (discriminative
learning rates, read by `frugalml.train.optim.build_optimizer`). BatchNorm layers of frozen groups
keep their running statistics: `FreezeAwareTrainer` holds them in eval mode while training.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from frugalml.errors import UnsupportedError
from frugalml.train import Trainer
from frugalml.train.evaluate import eval_mode

Unfreeze = int | Literal["head", "all"]


def classifier_name(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UnsupportedError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1]


def _params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def layer_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Groups of modules from input to output, without the classifier; groups without parameters dropped."""
    head = model.get_submodule(classifier_name(model))
    declared = getattr(model, "layer_groups", None)
    if callable(declared):
        groups = declared()
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        groups = [[m] for m in model.features]
        groups += [[m] for n, m in model.named_children() if n != "features" and m is not head]
    else:
        groups = [[m] for m in model.children() if m is not head]
    return [g for g in groups if _params(g) and not any(m is head for m in g)]


def set_head(model: nn.Module, head: nn.Module, name: str | None = None) -> None:
    """Put `head` where the classifier (or the module called `name`) is."""
    parent_name, _, leaf = (name or classifier_name(model)).rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, head)


def freeze(model: nn.Module, unfreeze: Unfreeze, lr_decay: float = 1.0) -> tuple[dict[str, float], list[nn.Module]]:
    """Set requires_grad for this phase; return ({parameter name: lr multiplier}, frozen BN modules)."""
    groups = layer_groups(model)
    n = len(groups) if unfreeze == "all" else 0 if unfreeze == "head" else min(int(unfreeze), len(groups))
    trainable = groups[len(groups) - n:]
    for p in model.parameters():
        p.requires_grad_(unfreeze == "all")
    head = model.get_submodule(classifier_name(model))
    for p in head.parameters():
        p.requires_grad_(True)
    scale_of: dict[int, float] = {}
    for depth, group in enumerate(reversed(trainable), start=1):
        for p in _params(group):
            p.requires_grad_(True)
            scale_of[id(p)] = lr_decay ** depth
    scales = {name: scale_of.get(id(p), 1.0) for name, p in model.named_parameters() if p.requires_grad}
    frozen_bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and not any(p.requires_grad for p in m.parameters())]
    return scales, frozen_bn


def batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def unfreeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class FreezeAwareTrainer(Trainer):
    """The Trainer, with the BatchNorm layers of frozen groups kept in eval mode (their running
    statistics are part of what was frozen) and the per-group learning rates of `lr_scales`."""

    def __init__(self, *args, frozen_bn: list[nn.Module] = (), lr_scales: dict[str, float] | None = None,
                 **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.frozen_bn = list(frozen_bn)
        self.lr_scales = lr_scales

    def fit(self, resume: bool = False):  # type: ignore[no-untyped-def]
        if self.lr_scales is not None:
            self.model.frugal_lr_scales = self.lr_scales
        try:
            return super().fit(resume)
        finally:
            if hasattr(self.model, "frugal_lr_scales"):
                del self.model.frugal_lr_scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.frozen_bn:
            m.eval()
        return super().forward(x)  # through the DDP wrapper when there are several processes


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running statistics on `x` (images only, no labels: AdaBN,
    Li et al. 2016), which undoes most of the shift between ImageNet photos and the target images.
    Everything else stays in eval mode. Returns the number of BN layers updated."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(x) == 0:
        return 0
    with eval_mode(model):
        saved = [(m, m.momentum) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            m.train()
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
        for m, momentum in saved:
            m.momentum = momentum
    return len(bns)

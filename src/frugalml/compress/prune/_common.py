"""Shared by the pruning methods: layer selection by name, fine-tuning through the one Trainer, MACs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pydantic import ValidationError

from frugalml.errors import ConfigError, UnsupportedError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase, nn.MultiheadAttention)


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


def weight_params(
    model: nn.Module, targets: Sequence[str] | None, ignore: Sequence[str]
) -> list[tuple[str, nn.Module, str]]:
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
            pnames = [p for p in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
                      if getattr(mod, p, None) is not None]
        else:
            continue
        out += [(name, mod, p) for p in pnames]
    return out


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


def finetune(
    model: nn.Module,
    data: Any,
    ft: Any,
    train_defaults: Any,
    *,
    epochs: int | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    log: logging.Logger | None = None,
    extra: dict | None = None,
    teacher: nn.Module | None = None,
) -> dict | None:
    """Fine-tune with frugalml.train.Trainer; the config is the recipe's train section updated with
    `ft` (FinetuneConfig), plus a distillation loss from `teacher` when `ft.distill` > 0. Returns a
    short summary for the stage metrics."""
    from frugalml.train import TrainConfig, Trainer

    base = train_defaults.to_dict() if train_defaults is not None else {}
    base.update(ft.overrides)
    base["epochs"] = ft.epochs if epochs is None else epochs
    if ft.lr is not None:
        base["lr"] = ft.lr
    base.update(extra or {})
    if base.get("warmup_epochs", 0) > base["epochs"]:
        base["warmup_epochs"] = 0.0
    try:
        cfg = TrainConfig(**base)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"prune.finetune: {loc}: {err['msg']}") from None
    if cfg.epochs == 0:
        return None
    terms = [DistillFrom(teacher, ft.distill, ft.temperature)] if teacher is not None and ft.distill > 0 else []
    trainer = Trainer(model, data, cfg, loss_terms=terms, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                      log=log, progress=False)  # fmt: skip
    result = trainer.fit(resume=resume and checkpoint_dir is not None)
    return {"epochs": result.epochs_run, "best_val_accuracy": result.best_val_accuracy}


class DistillFrom:
    """Trainer loss term: `weight * T^2 * KL(teacher || student)` on temperature-softened outputs
    (Hinton et al.), the teacher being the model as it was before pruning (frozen, eval mode)."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight, self.t = weight, temperature

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        with torch.no_grad():
            target = F.softmax(self.teacher(x).float() / self.t, dim=1)
        log_p = F.log_softmax(logits.float() / self.t, dim=1)
        return self.weight * self.t**2 * F.kl_div(log_p, target, reduction="batchmean")

"""Optimizer and learning-rate schedule built from a TrainConfig (torch's own classes only)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from frugalml.errors import UnsupportedError
from frugalml.train.config import TrainConfig

# onecycle follows torch.optim.lr_scheduler.OneCycleLR's defaults (cosine annealing)
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; biases and norm parameters (all 0/1-D tensors) get no weight decay.

    Discriminative learning rates: a model may carry `frugal_lr_scales` ({parameter name: multiplier},
    set by transfer learning); each multiplier gets its own parameter groups at `cfg.lr * multiplier`,
    largest first (so `param_groups[0]` still holds the peak lr). Frozen parameters are left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UnsupportedError(f"{type(model).__name__} has no trainable parameters; nothing to train")
    scales: dict[str, float] = getattr(model, "frugal_lr_scales", None) or {}
    groups = []
    for scale in sorted({float(scales.get(n, 1.0)) for n, _ in named}, reverse=True):
        params = [p for n, p in named if float(scales.get(n, 1.0)) == scale]
        extra = {"lr": cfg.lr * scale} if scales else {}
        groups += [
            g
            for g in ({"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, **extra},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **extra})
            if g["params"]
        ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    nesterov = cfg.nesterov and cfg.momentum > 0  # torch rejects nesterov without momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)


class LRShape:
    """Multiplier of the peak lr at optimizer step `s`. A plain object (not a lambda) so LambdaLR's
    state_dict stores its fields as JSON."""

    def __init__(self, schedule: str, total_steps: int, warmup_steps: int) -> None:
        self.schedule = schedule
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = min(int(warmup_steps), self.total_steps)

    def __call__(self, step: int) -> float:
        total, warm = self.total_steps, self.warmup_steps
        if self.schedule == "onecycle":
            # same phase boundaries as OneCycleLR: peak at step rise-1, minimum at the last step
            peak_step = max(float(warm or ONECYCLE_PCT_START * total) - 1, 0.0)
            start, end = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
            if step <= peak_step:
                return _cos_anneal(start, 1.0, step / peak_step if peak_step > 0 else 1.0)
            return _cos_anneal(1.0, end, min((step - peak_step) / max(total - 1 - peak_step, 1e-9), 1.0))
        if step < warm:
            return (step + 1) / (warm + 1)
        if self.schedule == "cosine":
            return _cos_anneal(1.0, 0.0, min((step - warm) / max(total - warm, 1), 1.0))
        return 1.0


def _cos_anneal(start: float, end: float, frac: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, LRShape(cfg.schedule, total, warmup))

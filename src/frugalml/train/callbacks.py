"""Trainer callbacks that several techniques share."""

from __future__ import annotations

from typing import Any

import torch


class KeepZeros:
    """Weights that are exactly zero when training starts stay zero: a pruned model keeps its sparsity
    through any later fine-tuning (QAT, distillation, averaging, codebook training). The Trainer adds
    it by itself for a model marked `frugal_sparse` (mask pruning and sparse artifacts set that mark);
    matrices and kernels only, so zero-initialised biases still learn."""

    def __init__(self) -> None:
        self.masks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_start(self, trainer: Any) -> None:
        self.masks = [(p, p.detach() != 0) for p in trainer.model.parameters()
                      if p.dim() >= 2 and not bool((p != 0).all())]

    @torch.no_grad()
    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        for p, keep in self.masks:
            p.mul_(keep)

    def kept_zeros(self) -> int:
        return sum(int((~keep).sum()) for _, keep in self.masks)


def require_labels(data: object, what: str) -> None:
    """The Trainer's loss and val accuracy are classification's: refuse other tasks in one line
    (embedding and regression data train through frugalml.compress.distill.targets instead)."""
    task = getattr(data, "task", "classification")
    if task != "classification":
        from frugalml.errors import ConfigError

        raise ConfigError(
            f"{what}: trains with cross-entropy on class labels, and this data's task is {task!r}; "
            "leave it out (or use a distill stage / prune finetune, which train on the task's objective)"
        )

"""Fine-tuning after (or, for AGP, during) pruning: the recipe's `train:` section merged with the
stage's `finetune:` through `frugalml.train.merge_train`, run by the one Trainer, optionally
distilling from the model as it was before pruning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from frugalml.compress.distill.losses import DistillFrom
from frugalml.errors import ConfigError

if TYPE_CHECKING:
    from frugalml.compress.prune.api import PruneInputs
    from frugalml.compress.prune.config import FinetuneConfig


def finetune(
    model: nn.Module,
    ft: FinetuneConfig | None,
    inputs: PruneInputs,
    *,
    epochs: int | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint: str = "finetune",
    every_epoch: bool = False,
) -> dict | None:
    """Train `model` in place as `ft` says (`epochs` overrides ft.epochs, e.g. one share of a
    multi-step schedule); checkpoints go to `inputs.workdir / checkpoint`. `every_epoch` turns early
    stopping off (a pruning schedule needs every epoch). Returns a summary for the stage metrics."""
    from frugalml.train import Trainer, merge_train

    if ft is None:
        return None
    defaults = inputs.train_defaults
    stage_seed = {"seed": inputs.seed} if defaults is None or defaults.seed is None else None
    cfg = merge_train(
        defaults, stage_seed, ft.overrides, {"epochs": ft.epochs if epochs is None else epochs, "lr": ft.lr},
        where=f"{inputs.where}.finetune",
    )
    if every_epoch:
        cfg = cfg.model_copy(update={"early_stopping": None})
    if cfg.epochs == 0:
        return None
    if getattr(inputs.data, "task", "classification") != "classification":
        # unlabelled data (embeddings): train toward the unpruned model's outputs (finetune.distill > 0)
        # or the data's reference targets, on the task's objective (frugalml.compress.distill.targets)
        from frugalml.compress.distill.targets import train_on_targets

        ckpt = inputs.workdir / checkpoint if inputs.workdir is not None else None
        if ft.hints and inputs.teacher is None:
            raise ConfigError(f"{inputs.where}.finetune.hints: match the unpruned model's layers only with "
                              "finetune.distill > 0")
        _, report = train_on_targets(model, inputs.teacher, inputs.data, cfg, callbacks=callbacks, checkpoint_dir=ckpt,
                                     resume=inputs.resume, log=inputs.log, hints=ft.hints, hint_teacher=inputs.teacher,
                                     where=f"{inputs.where}.finetune.hints")
        return {"epochs": report["epochs"], **{k: v for k, v in report.items() if k.startswith("val_")},
                "objective": report["objective"], "targets": report["targets"]}
    if ft.hints:
        raise ConfigError(f"{inputs.where}.finetune.hints: for embedding/regression tasks; for class logits use a "
                          "distill stage with hints")
    terms = [DistillFrom(inputs.teacher, ft.distill, ft.temperature)] if inputs.teacher is not None else []
    ckpt = inputs.workdir / checkpoint if inputs.workdir is not None else None
    trainer = Trainer(model, inputs.data, cfg, loss_terms=terms, callbacks=callbacks, checkpoint_dir=ckpt,
                      log=inputs.log, progress=False)
    result = trainer.fit(resume=inputs.resume and ckpt is not None)
    return {"epochs": result.epochs_run, "best_val_accuracy": result.best_val_accuracy}

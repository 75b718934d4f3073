"""Mode `qat`: the backend inserts fake quantizers, the trunk's Trainer — the one training loop —
fine-tunes, the backend converts. The only QAT-specific piece of training is a callback that
freezes the observed ranges (and BatchNorm statistics, where the backend has them) for the last
epoch, so the weights settle against fixed quantization grids before conversion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn as nn

from frugalml.compress.quantize.base import QuantizeContext, QuantizedModel

if TYPE_CHECKING:
    from frugalml.compress.quantize.config import QATConfig
    from frugalml.compress.quantize.registry import Backend
    from frugalml.train import TrainConfig


class FreezeQuantizers:
    """Trainer callback: after epoch `after`, stop updating quantization ranges and BN statistics."""

    def __init__(self, backend: Backend, after: int) -> None:
        self.backend, self.after = backend, after

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict) -> None:
        if epoch == self.after:
            self.backend.qat_freeze(trainer.model)


def qat_train_config(base: TrainConfig | None, qat: QATConfig, where: str) -> TrainConfig:
    """The recipe's `train:` section, then QAT's own defaults (its epochs and lr, no warm-up, no early
    stopping: the last epoch runs with frozen quantizers), then the stage's `qat.overrides`."""
    from frugalml.train import TrainConfig, merge_train

    start = (base or TrainConfig()).model_copy(update={"warmup_epochs": 0.0, "early_stopping": None})
    return merge_train(start, {"epochs": qat.epochs, "lr": qat.lr}, qat.overrides, where=where)


def run_qat(backend: Backend, model: nn.Module, settings: dict, ctx: QuantizeContext) -> QuantizedModel:
    from frugalml.train import Trainer, require_labels

    if ctx.train is None:
        raise TypeError("QAT needs ctx.train, the TrainConfig to fine-tune with (see qat_train_config)")
    require_labels(ctx.data, "quantization-aware training (qat)")
    prepared = backend.qat_prepare(model, settings, ctx.example())
    tcfg = ctx.train
    callbacks = [FreezeQuantizers(backend, tcfg.epochs - 1)] if tcfg.epochs > 1 else []
    if getattr(model, "frugal_sparse", False):  # the prepared graph does not carry the mark: keep the zeros
        from frugalml.train import KeepZeros

        callbacks.append(KeepZeros())
    # one checkpoint folder per backend: `auto` may fall back to another one after a failure
    checkpoints = ctx.workdir / f"qat-{backend.name}" if ctx.workdir is not None else None
    ctx.log.info("QAT (%s): %d epoch(s) at lr %g", backend.name, tcfg.epochs, tcfg.lr)
    trainer = Trainer(prepared, ctx.data, tcfg, loss_terms=ctx.loss_terms(model), callbacks=callbacks,
                      checkpoint_dir=checkpoints, log=ctx.log, progress=False)
    result = trainer.fit(resume=ctx.resume)
    q = backend.qat_finish(prepared, model, settings)
    q.frugal_report["qat"] = {"epochs_run": result.epochs_run, "best_val_accuracy": result.best_val_accuracy,
                              **ctx.distill_report()}
    return q

"""Mode `qat`: insert fake quantizers (pt2e or torch.ao FX), fine-tune with the trunk's Trainer — the
one training loop — and convert. The only QAT-specific piece of training is a callback that freezes
the observed ranges (and, for torch.ao, the BatchNorm statistics) for the last epoch, so the weights
settle against fixed quantization grids before conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.nn as nn

from frugalml.compress.quantize import pt2e, torch_ao
from frugalml.compress.quantize._common import QuantizedModel, calibration_batches


class FreezeQuantizers:
    """Trainer callback: after epoch `after`, stop updating quantization ranges and BN statistics."""

    def __init__(self, backend: str, after: int) -> None:
        self.backend, self.after = backend, after

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict) -> None:
        if epoch != self.after:
            return
        if self.backend == "pt2e":
            from torchao.quantization.pt2e import disable_observer
        else:
            import torch.ao.nn.intrinsic.qat as nniqat
            from torch.ao.quantization import disable_observer

            trainer.model.apply(nniqat.freeze_bn_stats)
        trainer.model.apply(disable_observer)


def qat_train_config(base: Any, qat: Any) -> Any:
    from frugalml.train import TrainConfig

    base = base if base is not None else TrainConfig()
    fields = {**base.to_dict(), "epochs": qat.epochs, "lr": qat.lr, "warmup_epochs": 0.0, "early_stopping": None}
    fields.update(qat.overrides)
    return TrainConfig(**fields)


def run_qat(model: nn.Module, cfg: Any, backend: str, recipe: dict, data: Any, *, train: Any = None,
            workdir: Path | None = None, resume: bool = False, log: logging.Logger) -> QuantizedModel:  # fmt: skip
    from frugalml.train import Trainer

    example = calibration_batches(data, 1, cfg.calibration_batch_size)[0]
    module = pt2e if backend == "pt2e" else torch_ao
    prepared = module.prepare(model, recipe, example)
    tcfg = qat_train_config(train, cfg.qat)
    callbacks = [FreezeQuantizers(backend, tcfg.epochs - 1)] if tcfg.epochs > 1 else []
    checkpoints = Path(workdir) / "qat-checkpoint" if workdir is not None else None
    log.info("QAT (%s): %d epoch(s) at lr %g", backend, tcfg.epochs, tcfg.lr)
    result = Trainer(prepared, data, tcfg, callbacks=callbacks, checkpoint_dir=checkpoints, log=log,
                     progress=False).fit(resume=resume)  # fmt: skip
    q = module.finish_qat(prepared, model, recipe)
    q.frugal_report["qat"] = {"epochs_run": result.epochs_run, "best_val_accuracy": result.best_val_accuracy}
    return q

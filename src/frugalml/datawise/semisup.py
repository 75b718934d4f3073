"""Stage `semisup`: train with the few labels of `data.labels_per_class` and the unlabelled rest.

The method (`frugalml.datawise.ssl_methods`: pseudo_label, fixmatch, flexmatch, mean_teacher) plugs
into the one Trainer as a loss term and a callback. An epoch is one pass over the unlabelled pool (or
`unlabelled_per_epoch` of it): the small labelled set is cycled alongside, one labelled batch per
`mu` unlabelled ones, so the learning-rate schedule is sized by unlabelled data seen. The stage may
start from scratch or from its parent (e.g. a `transfer` stage), and may keep lower layer groups
frozen (`unfreeze`) to save compute on a large pretrained network.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from frugalml.compress.average import WeightAverager, recompute_bn
from frugalml.data.augment import AugmentConfig
from frugalml.data.bundle import DataBundle
from frugalml.datawise._freeze import FreezeAwareTrainer, Unfreeze, batchnorms, freeze, unfreeze_all
from frugalml.datawise.ssl_methods import FixMatch, MethodConfig, make_method
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig, build_model
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import TrainOverrides, merge_train, predict_logits
from frugalml.train.evaluate import evaluate

POOL_STATS_SAMPLES = 10_000  # pool samples the final pseudo-label statistics are measured on
BN_SAMPLES = 10_240  # pool samples that re-estimate BatchNorm statistics for the averaged (EMA) weights


class SemiSupStage(StageConfig):
    """Semi-supervised training on the labelled split plus the unlabelled pool."""

    kind: Literal["semisup"] = "semisup"
    method: MethodConfig = FixMatch()  # type: ignore[valid-type]
    init: Literal["auto", "fresh", "parent"] = "auto"  # auto: fresh for the first stage
    model: ModelConfig | None = None  # a different architecture (implies fresh)
    epochs: int | None = Field(None, ge=0, description="passes over the unlabelled pool (train.epochs)")
    unlabelled_per_epoch: int | None = Field(None, ge=1, description="unlabelled samples per epoch (default: all)")
    unfreeze: Unfreeze = Field("all", description="layer groups that train besides the head (head, N, all)")
    lr_decay: float = Field(1.0, gt=0, le=1, description="discriminative lr per layer group below the head")
    freeze_bn: bool = Field(False, description="keep every BatchNorm's statistics (e.g. of a pretrained network)")
    ema: float | None = Field(
        None, gt=0, lt=1, description="keep an exponential moving average of the weights with this decay per step "
        "(FixMatch: 0.999) and hand it on instead of the last weights; the BatchNorm statistics of the trained "
        "layers are then re-estimated on the unlabelled pool")
    train: TrainOverrides = TrainOverrides()  # type: ignore[valid-type]

    def starts_fresh(self) -> bool:
        return self.init == "fresh" or self.model is not None


class SemiSupTrainer(FreezeAwareTrainer):
    """Epochs sized by the unlabelled pool: the labelled split is cycled to give one labelled batch per
    step (`epoch_order`/`samples_per_epoch` are the Trainer's seams for exactly this)."""

    def __init__(self, *args, steps_per_epoch: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._steps = steps_per_epoch
        super().__init__(*args, **kwargs)

    @property
    def samples_per_epoch(self) -> int:
        return self._steps * self.cfg.batch_size

    def epoch_order(self) -> torch.Tensor:
        n = len(self.data.y_train)
        reps = math.ceil(self.samples_per_epoch / n)
        return torch.cat([torch.randperm(n, generator=self.generator) for _ in range(reps)])[: self.samples_per_epoch]


def pool_statistics(model: nn.Module, data: DataBundle, threshold: float, seed: int) -> dict:
    """Share of (a seeded sample of) the pool predicted above `threshold`, and how many of those are right."""
    assert data.x_unlabelled is not None and data.y_unlabelled is not None
    n = len(data.x_unlabelled)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:POOL_STATS_SAMPLES]
    conf, pred = predict_logits(model, data.x_unlabelled[idx]).softmax(1).max(1)
    used = conf >= threshold
    correct = int((pred[used] == data.y_unlabelled[idx][used]).sum())
    return {"threshold": threshold, "samples": len(idx), "quantity": float(used.float().mean()),
            "precision": correct / int(used.sum()) if int(used.sum()) else None,
            "accuracy": float((pred == data.y_unlabelled[idx]).float().mean())}


def _apply_ema(model: nn.Module, averager: WeightAverager, data: DataBundle, frozen_bn: list[nn.Module]) -> dict:
    """Load the averaged weights into `model` and re-estimate the trained BatchNorms' statistics on (a
    seeded sample of) the pool: the running statistics of the last weights do not describe the average."""
    assert data.x_unlabelled is not None
    report: dict = {"decay": averager.decay, "steps_averaged": averager.count}
    if averager.count == 0:
        return report
    if len(data.y_val):
        report["val_accuracy_last_weights"] = evaluate(model, data.x_val, data.y_val)
    if len(data.y_test):  # reported next to the stage's own (averaged) test accuracy; nothing picks on it
        report["test_accuracy_last_weights"] = evaluate(model, data.x_test, data.y_test)
    averager.apply(model)
    idx = torch.randperm(len(data.x_unlabelled), generator=torch.Generator().manual_seed(0))[:BN_SAMPLES]
    report["bn_layers_recomputed"] = recompute_bn(model, None, x=data.x_unlabelled[idx], skip=frozen_bn)
    if len(data.y_val):
        report["val_accuracy_ema"] = evaluate(model, data.x_val, data.y_val)
    model.eval()
    return report


def semisup(model: nn.Module, cfg: SemiSupStage, ctx: StageContext) -> nn.Module:
    """Train `model` with `cfg.method`; statistics go to ctx.extra_metrics["semisup"]."""
    data = ctx.data
    if data.x_unlabelled is None or len(data.x_unlabelled) == 0:
        raise ConfigError(f"stages.{cfg.name}: semi-supervised learning needs an unlabelled pool; "
                          "set data.labels_per_class")
    tcfg = merge_train(ctx.train_defaults, cfg.train, {"epochs": cfg.epochs}, where=f"stages.{cfg.name}.train")
    if tcfg.augment is None:  # labelled batches get the weak view, as in FixMatch
        tcfg = tcfg.model_copy(update={"augment": AugmentConfig.preset("weak")})
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": ctx.seed})
    method = make_method(cfg.method, data, int(tcfg.seed), tcfg.batch_size)
    per_epoch = min(cfg.unlabelled_per_epoch or len(data.x_unlabelled), len(data.x_unlabelled))
    steps = max(1, math.ceil(per_epoch / method.stream.batch))
    scales, frozen_bn = freeze(model, cfg.unfreeze, cfg.lr_decay)
    frozen_bn = batchnorms(model) if cfg.freeze_bn else frozen_bn
    averager = WeightAverager("ema", decay=cfg.ema) if cfg.ema is not None else None
    trainer = SemiSupTrainer(
        model, data, tcfg, loss_terms=[method], callbacks=[method, averager] if averager else [method],
        frozen_bn=frozen_bn,
        lr_scales=None if cfg.unfreeze == "all" and cfg.lr_decay == 1 else scales, steps_per_epoch=steps,
        checkpoint_dir=ctx.workdir / "checkpoint", log=ctx.log,
    )
    t0 = time.perf_counter()
    result = trainer.fit(resume=ctx.resume)
    unfreeze_all(trainer.model)
    ema = _apply_ema(trainer.model, averager, data, frozen_bn) if averager is not None else None
    ctx.extra_metrics["semisup"] = {
        "method": cfg.method.to_dict(), **({"ema": ema} if ema is not None else {}),
        "labelled": len(data.y_train), "unlabelled": len(data.x_unlabelled), "steps_per_epoch": steps,
        "pseudo_labels": pool_statistics(trainer.model, data, cfg.method.threshold, ctx.seed),
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "history": result.history,
    }
    ctx.extra_metrics["labels_used"] = len(data.y_train)
    return trainer.model


@register_stage(SemiSupStage)
def run_semisup_stage(model: nn.Module | None, cfg: SemiSupStage, ctx: StageContext) -> nn.Module:
    if cfg.starts_fresh() or (cfg.init == "auto" and model is None):
        if cfg.model is not None:
            ctx.model_spec = cfg.model.spec(ctx.data.input_shape, ctx.data.num_classes)
        spec = ctx.model_spec
        torch.manual_seed(ctx.seed)
        model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])
    elif model is None:
        raise ConfigError(f"stages.{cfg.name}.init: 'parent' needs an earlier stage that made a model")
    return semisup(model, cfg, ctx)

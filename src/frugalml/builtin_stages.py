"""The stages that make a model: `train` (fresh or fine-tune) and `load` (an existing artifact)."""

from __future__ import annotations

import time
from typing import Literal

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig, build_model
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import Trainer, TrainOverrides, merge_train


class TrainStage(StageConfig):
    """Train a model: a fresh one from `model` (or the recipe's model), or fine-tune the parent."""

    kind: Literal["train"] = "train"
    init: Literal["auto", "fresh", "parent"] = "auto"  # auto: fresh for the first stage
    model: ModelConfig | None = None  # a different architecture (implies fresh)
    epochs: int | None = None  # shorthand for train.epochs
    train: TrainOverrides = TrainOverrides()  # type: ignore[valid-type]

    def starts_fresh(self) -> bool:
        return self.init == "fresh" or self.model is not None


class LoadStage(StageConfig):
    """Start from an existing frugalml artifact directory."""

    kind: Literal["load"] = "load"
    path: str

    def starts_fresh(self) -> bool:
        return True


@register_stage(TrainStage)
def run_train_stage(model: nn.Module | None, cfg: TrainStage, ctx: StageContext) -> nn.Module:
    fresh = cfg.starts_fresh() or (cfg.init == "auto" and model is None)
    if fresh:
        if cfg.model is not None:
            ctx.model_spec = cfg.model.spec(ctx.data.input_shape, ctx.data.num_classes)
        spec = ctx.model_spec
        torch.manual_seed(ctx.seed)
        model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])
    elif model is None:
        raise ConfigError(f"stages.{cfg.name}.init: 'parent' needs an earlier stage that made a model")
    tcfg = merge_train(ctx.train_defaults, cfg.train, {"epochs": cfg.epochs}, where=f"stages.{cfg.name}.train")
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": ctx.seed})
    if ctx.data.task != "classification" and tcfg.epochs > 0:  # float targets: the task's loss, not cross-entropy
        from frugalml.compress.distill.targets import TaskTrainer

        trainer: Trainer = TaskTrainer(model, ctx.data, tcfg, checkpoint_dir=ctx.workdir / "checkpoint", log=ctx.log)
    else:
        trainer = Trainer(model, ctx.data, tcfg, checkpoint_dir=ctx.workdir / "checkpoint", log=ctx.log)
    t0 = time.perf_counter()
    result = trainer.fit(resume=ctx.resume)
    ctx.extra_metrics["training"] = {
        "epochs_run": result.epochs_run,
        "best_val_accuracy": result.best_val_accuracy,
        "stopped_early": result.stopped_early,
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "history": result.history,
    }
    return trainer.model


@register_stage(LoadStage)
def run_load_stage(model: nn.Module | None, cfg: LoadStage, ctx: StageContext) -> nn.Module:
    info = artifact.read_info(cfg.path)
    spec = info["spec"]
    classes_differ = ctx.data.has_targets and spec["num_classes"] != ctx.data.num_classes  # (a reference task waits)
    if tuple(spec["input_shape"]) != tuple(ctx.data.input_shape) or classes_differ:
        raise ConfigError(
            f"stages.{cfg.name}.path: {cfg.path} expects input {spec['input_shape']} with "
            f"{spec['num_classes']} classes, but the data gives {list(ctx.data.input_shape)} with "
            f"{ctx.data.num_classes}"
        )
    loaded = artifact.load(cfg.path, trust_code=ctx.trust_code)
    ctx.model_spec = spec
    ctx.artifact_meta.update({k: v for k, v in info.items() if k == "format" and v != "torch-fp32"})
    return loaded

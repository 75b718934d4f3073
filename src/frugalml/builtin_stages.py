"""The stages that make a model: `train` (fresh or fine-tune) and `load` (an existing artifact)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import torch
import torch.nn as nn
from pydantic import ValidationError, create_model

from frugalml import artifact
from frugalml.config import Config
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig, build_model
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import TrainConfig, Trainer


def _all_optional(cls: type[Config], name: str) -> type[Config]:
    """A config with the same fields and constraints as `cls`, each optional (overrides)."""
    fields: dict[str, Any] = {}
    for fname, f in cls.model_fields.items():
        ann = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[fname] = (ann | None, None)
    return create_model(name, __base__=Config, __doc__=f"Optional overrides of {cls.__name__}.", **fields)


TrainOverrides = _all_optional(TrainConfig, "TrainOverrides")


def merged_train_config(defaults: TrainConfig | None, overrides: Config | None, **extra: Any) -> TrainConfig:
    """The recipe's `train:` section updated with a stage's overrides (None means 'keep')."""
    base = (defaults or TrainConfig()).model_dump()
    if overrides is not None:
        base.update({k: v for k, v in overrides.model_dump().items() if v is not None})
    base.update({k: v for k, v in extra.items() if v is not None})
    try:
        return TrainConfig.model_validate(base)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"train.{key}: {first['msg']} (after applying the stage's overrides)") from None


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
    tcfg = merged_train_config(ctx.train_defaults, cfg.train, epochs=cfg.epochs)
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": ctx.seed})
    trainer = Trainer(model, ctx.data, tcfg, checkpoint_dir=ctx.stage_dir / "work" / "checkpoint", log=ctx.log)
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
    loaded = artifact.load(cfg.path)
    spec = info["spec"]
    if tuple(spec["input_shape"]) != tuple(ctx.data.input_shape) or spec["num_classes"] != ctx.data.num_classes:
        raise ConfigError(
            f"stages.{cfg.name}.path: {cfg.path} expects input {spec['input_shape']} with "
            f"{spec['num_classes']} classes, but the data gives {list(ctx.data.input_shape)} with "
            f"{ctx.data.num_classes}"
        )
    ctx.model_spec = spec
    ctx.artifact_meta.update({k: v for k, v in info.items() if k == "format" and v != "torch-fp32"})
    return loaded

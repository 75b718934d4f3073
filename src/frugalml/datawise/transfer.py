"""Stage `transfer`: start from a pretrained network, adapt its input, give it a new head, fine-tune it
with a freeze schedule.

Source: `efficientnet_lite0` (ImageNet weights from the optional extra `pretrained`) or any frugalml
artifact directory. The input is adapted (grey <-> RGB through the stem's kernels, resize for the
EfficientNet; other zoo models are rebuilt for the target shape, which works for every model with
global pooling), the classifier is replaced for the target classes, and the phases run in order:
linear probe (`unfreeze: head`), partial unfreeze (`unfreeze: N` top layer groups), full fine-tune
(`unfreeze: all`), each with discriminative learning rates (`lr_decay` per group below the head).
While only the head trains, the frozen network's features are computed once and the head trains on
them (`cache_features`).

The artifact is an ordinary zoo model: its spec rebuilds the adapted network (weights not reloaded).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from frugalml import artifact
from frugalml.config import Config
from frugalml.data.bundle import DataBundle
from frugalml.datawise._freeze import (
    FreezeAwareTrainer,
    Unfreeze,
    adapt_batchnorm,
    batchnorms,
    classifier_name,
    freeze,
    set_head,
    trainable_params,
    unfreeze_all,
)
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.models import MODELS, build_model, model_spec
from frugalml.models._registry import factory_options
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import Trainer, TrainOverrides, merge_train, predict_logits

DEFAULT_RESIZE = 48  # EfficientNet input side: ~0.8 s per 256 images on one core; 48 px features probe
# ~8 points better than 32 px on Fashion-MNIST at about the same CPU cost (see BENCHMARKS.md)


class TransferPhase(Config):
    """One phase of the freeze schedule."""

    unfreeze: Unfreeze = Field("head", description="what trains besides the head: head (linear probe), "
                               "N top layer groups, or all")
    epochs: int = Field(5, ge=0)
    lr: float | None = Field(None, gt=0, description="peak lr of the head (default: the recipe's train.lr)")
    lr_decay: float = Field(1.0, gt=0, le=1, description="each layer group below the head trains at lr * lr_decay**depth")
    freeze_bn: bool = Field(True, description="BatchNorm statistics stay as pretrained (eval mode) even in "
                            "unfrozen groups: small fine-tuning batches estimate them badly")
    train: TrainOverrides = TrainOverrides()  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _count(self) -> TransferPhase:
        if isinstance(self.unfreeze, int) and self.unfreeze < 0:
            raise ValueError("unfreeze must be head, all or a number of layer groups >= 0")
        return self


_ADAM = {"optimizer": "adamw", "grad_clip": 5.0}
PRESETS: dict[str, list[dict[str, Any]]] = {
    "probe": [{"unfreeze": "head", "epochs": 30}],
    # after the probe the head is confident: SGD at a probe-sized lr blows the features up; AdamW at a
    # small lr with clipping fine-tunes stably (recipes/fashion-mnist-labels.yaml)
    "finetune": [{"unfreeze": "head", "epochs": 10},
                 {"unfreeze": 3, "epochs": 5, "lr": 3e-4, "lr_decay": 0.5, "train": _ADAM},
                 {"unfreeze": "all", "epochs": 10, "lr": 1e-4, "lr_decay": 0.7, "train": _ADAM}],
}


class TransferStage(StageConfig):
    """Transfer learning from a pretrained network (or any artifact) with a freeze schedule."""

    kind: Literal["transfer"] = "transfer"
    source: str = Field("efficientnet_lite0", description="a pretrained zoo model or an artifact directory")
    resize: int | None = Field(None, ge=8, description="EfficientNet source: input side after resizing (default 48)")
    phases: list[TransferPhase] = Field(default_factory=lambda: [TransferPhase(**p) for p in PRESETS["finetune"]],
                                        description="the freeze schedule, or a preset: probe, finetune")
    cache_features: bool = Field(True, description="while only the head trains, compute the features once")
    adapt_bn: bool = Field(False, description="re-estimate BatchNorm statistics on the target images (AdaBN; "
                          "hurt the Fashion-MNIST probe by 15-20 points, hence off)")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("phases"), str):
            name = value["phases"]
            if name not in PRESETS:
                raise ValueError(f"phases: unknown preset {name!r}; allowed: {', '.join(PRESETS)} or a list")
            value = {**value, "phases": PRESETS[name]}
        return value

    def starts_fresh(self) -> bool:
        return True


def _pretrained_source(name: str, cfg: TransferStage, data: DataBundle) -> tuple[nn.Module, dict]:
    options, _ = factory_options(MODELS.get(name))
    if "pretrained" not in options:
        raise ConfigError(f"stages.{cfg.name}.source: zoo model {name!r} has no pretrained weights; "
                          "use efficientnet_lite0 or an artifact directory")
    kwargs = {"activation": "relu", "resize": cfg.resize or DEFAULT_RESIZE,
              "input_mean": float(data.mean), "input_std": float(data.std)}
    model = build_model(name, data.input_shape, data.num_classes, pretrained=True, **kwargs)
    # the artifact rebuilds the architecture only: its own weights replace the ImageNet ones
    spec = model_spec(name, data.input_shape, data.num_classes, **kwargs, pretrained=False)
    return model, spec


def adapt_artifact(directory: str | Path, data: DataBundle, trust: Any = False, resize: int | None = None,
                   where: str = "source") -> tuple[nn.Module, dict]:
    """Rebuild the artifact's architecture for this data (input shape, classes) and copy every weight
    that still fits; the first conv follows the channel change, the classifier is new."""
    info = artifact.read_info(directory)
    if info.get("format", "torch-fp32") not in ("torch-fp32", "torch-packed"):
        raise UnsupportedError(f"{where}: {directory} holds a {info['format']} model; transfer needs a float one")
    old = info["spec"]
    src = artifact.load(directory, trust_code=trust)
    kwargs = dict(old.get("kwargs", {}))
    if ":" not in old["name"] and "input_mean" in factory_options(MODELS.get(old["name"]))[0]:
        kwargs.update(input_mean=float(data.mean), input_std=float(data.std), **({"resize": resize} if resize else {}))
    spec = model_spec(old["name"], data.input_shape, data.num_classes, **kwargs)
    model = artifact.build_from_spec(spec, trust_code=trust)
    head = classifier_name(src)
    source_state = {k: v for k, v in src.state_dict().items() if not k.startswith(head + ".")}
    as_built = artifact.build_from_spec(old, trust_code=trust).state_dict()
    if any(as_built[k].shape != v.shape for k, v in source_state.items() if k in as_built):
        artifact.reshape_to(model, source_state)  # a structurally pruned source keeps its channel counts
    target = model.state_dict()
    for key, value in source_state.items():
        mine = target.get(key)
        if mine is not None and value.ndim == 4 and mine.ndim == 4 and value.shape[2:] == mine.shape[2:] \
                and value.shape[0] == mine.shape[0] and {value.shape[1], mine.shape[1]} == {1, 3}:
            # the first conv: grey target = the RGB kernels summed; RGB target = the grey kernel split in three
            value = value.sum(1, keepdim=True) if mine.shape[1] == 1 else value.expand(-1, 3, -1, -1) / 3
        if mine is None or mine.shape != value.shape:
            have = "none" if mine is None else list(mine.shape)
            raise UnsupportedError(
                f"{where}: {directory} was built for input {old['input_shape']} and cannot take "
                f"{list(data.input_shape)}: its {key} has shape {list(value.shape)}, here {have}; resize the "
                "data to the source's input (data.image_size) or use a source with global pooling"
            )
        target[key] = value
    in_features = src.get_submodule(head).in_features
    set_head(model, nn.Linear(in_features, data.num_classes))
    target.update({k: v for k, v in model.state_dict().items() if k.startswith(head + ".")})
    model.load_state_dict(target)
    return model, spec


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the classifier sees, for every row of x (eval mode)."""
    name = classifier_name(model)
    head = model.get_submodule(name)
    set_head(model, nn.Identity(), name)
    try:
        return predict_logits(model, x)
    finally:
        set_head(model, head, name)


def _head_is_last(model: nn.Module, data: DataBundle) -> bool:
    x = data.x_train[:4]
    head = model.get_submodule(classifier_name(model))
    with torch.no_grad():
        return torch.allclose(head.eval()(_features(model, x)), predict_logits(model, x), atol=1e-4)


def _probe_on_features(model: nn.Module, data: DataBundle, tcfg: Any, ctx: StageContext, phase: int) -> dict:
    """Train only the classifier, on features computed once."""
    t0 = time.perf_counter()
    feats = DataBundle(
        name=f"{data.name}:features", x_train=_features(model, data.x_train), y_train=data.y_train,
        x_val=_features(model, data.x_val), y_val=data.y_val, x_test=torch.zeros(0), y_test=torch.zeros(0, dtype=torch.long),
        num_classes=data.num_classes, class_names=data.class_names,
    )
    seconds = time.perf_counter() - t0
    head = copy.deepcopy(model.get_submodule(classifier_name(model)))
    trainer = Trainer(head, feats, tcfg.model_copy(update={"augment": None, "channels_last": False}),
                      checkpoint_dir=ctx.workdir / f"phase{phase}", log=ctx.log)
    result = trainer.fit(resume=ctx.resume)
    set_head(model, trainer.model)
    return {"cached_features": True, "feature_seconds": round(seconds, 2), "best_val_accuracy": result.best_val_accuracy}


def transfer(model: nn.Module, cfg: TransferStage, ctx: StageContext) -> nn.Module:
    """Run the freeze schedule on `model` (already adapted, new head). Phase reports go to ctx.extra_metrics."""
    data, reports = ctx.data, []
    if cfg.adapt_bn:
        pool = data.x_train if data.x_unlabelled is None else torch.cat([data.x_train, data.x_unlabelled[:4096]])
        adapt_batchnorm(model, pool)
    can_cache = cfg.cache_features and _head_is_last(model, data)
    for i, phase in enumerate(cfg.phases):
        where = f"stages.{cfg.name}.phases.{i}.train"
        tcfg = merge_train(ctx.train_defaults, phase.train, {"epochs": phase.epochs, "lr": phase.lr}, where=where)
        if tcfg.seed is None:
            tcfg = tcfg.model_copy(update={"seed": ctx.seed + i})
        scales, frozen_bn = freeze(model, phase.unfreeze, phase.lr_decay)
        frozen_bn = batchnorms(model) if phase.freeze_bn else frozen_bn
        report = {"unfreeze": phase.unfreeze, "epochs": phase.epochs, "trainable_params": trainable_params(model)}
        t0 = time.perf_counter()
        if phase.unfreeze == "head" and can_cache and phase.epochs > 0:
            report.update(_probe_on_features(model, data, tcfg, ctx, i))
        elif phase.epochs > 0:
            trainer = FreezeAwareTrainer(model, data, tcfg, frozen_bn=frozen_bn, lr_scales=scales,
                                         checkpoint_dir=ctx.workdir / f"phase{i}", log=ctx.log)
            report["best_val_accuracy"] = trainer.fit(resume=ctx.resume).best_val_accuracy
        report["seconds"] = round(time.perf_counter() - t0, 2)
        reports.append(report)
        ctx.log.info("transfer phase %d (%s): %s", i, phase.unfreeze, report)
    unfreeze_all(model)
    model.eval()  # a probe-only run trains the head alone: the backbone would come back in train mode
    ctx.extra_metrics["transfer"] = {"source": cfg.source, "phases": reports}
    ctx.extra_metrics["labels_used"] = len(data.y_train)
    return model


@register_stage(TransferStage)
def run_transfer_stage(model: nn.Module | None, cfg: TransferStage, ctx: StageContext) -> nn.Module:
    torch.manual_seed(ctx.seed)  # the new head's initialization
    if cfg.source in MODELS:
        model, spec = _pretrained_source(cfg.source, cfg, ctx.data)
    elif Path(cfg.source).is_dir():
        model, spec = adapt_artifact(cfg.source, ctx.data, ctx.trust_code, cfg.resize, f"stages.{cfg.name}.source")
    else:
        raise ConfigError(f"stages.{cfg.name}.source: {cfg.source!r} is neither a pretrained zoo model "
                          "(efficientnet_lite0) nor an artifact directory")
    ctx.model_spec = spec
    return transfer(model, cfg, ctx)

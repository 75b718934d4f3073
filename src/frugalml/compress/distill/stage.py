"""The `distill` stage and the `distill()` verb: one config class for YAML and Python.

    from frugalml.compress.distill import DKD, DistillStage, distill
    student = distill("cnn", teacher, DistillStage(model={"name": "cnn", "kwargs": {"width": 8}},
                      loss=DKD(), epochs=30), data)

Training is the one Trainer (an `IndexedTrainer`, which only adds sample indices for the teacher
cache) with the distillation losses as loss terms; nothing here loops over batches.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator, model_validator

from frugalml.compress.distill.cache import IndexedTrainer, TeacherOutputs, taps
from frugalml.compress.distill.hints import Hint, HintTerm, StudentWithAdapters, build_adapters
from frugalml.compress.distill.losses import KD, LogitDistillTerm, LogitLoss
from frugalml.compress.distill.refs import check_outputs, resolve
from frugalml.compress.distill.targets import even_layers, train_on_targets
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig, build_model
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import TrainConfig, TrainOverrides, merge_train
from frugalml.train.evaluate import predict_logits

LOSSES = ("kd", "dkd", "dist")
MAX_CACHE_BYTES = 1 << 30  # the teacher cache holds N x classes float32 logits in memory


class DistillStage(StageConfig):
    """Train a student to imitate a teacher: a logit loss (kd, dkd or dist) and/or FitNets hints,
    through the one Trainer. The student is `model` (a zoo or user architecture, trained from
    scratch) or, by default, the parent stage's model (e.g. a pruned model learning from its
    unpruned self). Teacher and student may differ in architecture, not in classes or input."""

    kind: Literal["distill"] = "distill"
    teacher: str | None = Field(None, description="an earlier stage's name or an artifact folder (in Python: "
                                "the teacher argument of distill())")
    model: ModelConfig | None = Field(None, description="the student architecture, trained from scratch; "
                                      "default: the parent stage's model")
    loss: LogitLoss | None = Field(default_factory=KD, description="logit method (type: kd, dkd or dist); "
                                   "null: hints only")  # type: ignore[valid-type]
    hints: list[Hint] = Field(default_factory=list, description="feature distillation between named layers")
    epochs: int | None = Field(None, ge=0, description="shorthand for train.epochs")
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    cache_teacher: bool = Field(True, description="compute the teacher's logits once when that gives the same "
                                "result (no augmentation, no hints)")
    layers: int | list[int] | None = Field(
        None, description="layer dropping (Hugging Face encoders): the student is the parent model keeping only "
        "these encoder layers, initialised from them; an int N keeps N evenly spaced ones (6 -> 3: 0, 2, 4)")

    @field_validator("loss", mode="before")
    @classmethod
    def _known_type(cls, v: Any) -> Any:
        # checked here so the message names loss.type (a nested union's tag error reads like a stage kind's)
        if isinstance(v, Mapping):
            kind = v.get("type", "kd")
            if kind not in LOSSES:
                raise ValueError(f"unknown type {kind!r}; allowed: {', '.join(LOSSES)}")
            return {**v, "type": kind}
        return v

    @model_validator(mode="after")
    def _something_to_learn(self) -> DistillStage:
        if self.loss is None and not self.hints:
            raise ValueError("loss: null leaves nothing to distil; keep a logit loss or add hints")
        return self

    def starts_fresh(self) -> bool:
        return self.model is not None

    @model_validator(mode="after")
    def _one_student(self) -> DistillStage:
        if self.layers is not None and self.model is not None:
            raise ValueError("layers and model both define the student; give one")
        if isinstance(self.layers, int) and self.layers < 1:
            raise ValueError("layers: keep at least one layer")
        return self


def as_config(cfg: DistillStage | Mapping[str, Any] | None) -> DistillStage:
    if cfg is None:
        return DistillStage()
    if isinstance(cfg, DistillStage):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"distill: expected a DistillStage or a mapping, got {type(cfg).__name__}")
    return DistillStage.checked("distill", dict(cfg))


def _why_not_cached(cfg: DistillStage, tcfg: TrainConfig, data: DataBundle) -> str | None:
    if not cfg.cache_teacher:
        return "cache_teacher: false"
    if tcfg.augment is not None and tcfg.augment.active:
        return "augmentation is on: the teacher must see each augmented batch"
    if cfg.hints:
        return "hint layers need the teacher's features of every batch"
    if tcfg.epochs <= 1:
        return "one epoch or less: a cache would save nothing"
    if len(data.y_train) * data.num_classes * 4 > MAX_CACHE_BYTES:
        return f"the logits of {len(data.y_train):,} samples x {data.num_classes} classes exceed {MAX_CACHE_BYTES >> 20} MiB"
    return None


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def distill_with_metrics(
    student: nn.Module,
    teacher: nn.Module,
    cfg: DistillStage | Mapping[str, Any] | None,
    data: DataBundle,
    *,
    train_defaults: TrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    log: logging.Logger | None = None,
    where: str = "distill",
    teacher_name: str = "teacher",
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train `student` in place to imitate the frozen `teacher` on `data`; returns (student, metrics).
    Data whose task is not classification (embeddings, regression) is distilled on the task's
    objective toward the teacher's outputs (`targets.train_on_targets`), plus the `hints` as hidden-state
    MSE (`targets.HiddenMatch`, equal widths); `loss` is for class logits."""
    cfg = as_config(cfg)
    check_outputs(student, data, f"{where}.model", "the student")
    check_outputs(teacher, data, f"{where}.teacher", f"the teacher {teacher_name!r}")
    tcfg = merge_train(train_defaults, cfg.train, {"epochs": cfg.epochs}, where=f"{where}.train")
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": seed})
    if getattr(data, "task", "classification") != "classification":
        reuse = getattr(data, "reference", None) == f"outputs of stage {teacher_name}"  # targets already are its outputs
        student, report = train_on_targets(student, None if reuse else teacher, data, tcfg,
                                           checkpoint_dir=checkpoint_dir, resume=resume, log=log, progress=progress,
                                           hints=cfg.hints, hint_teacher=teacher, where=f"{where}.hints")
        return student, {"teacher": teacher_name, "loss": report["objective"],
                         "hints": [h.to_dict() for h in cfg.hints], "teacher_params": _n_params(teacher),
                         "student_params": _n_params(student), "training": report}
    outputs = TeacherOutputs(teacher, [h.teacher for h in cfg.hints])
    try:
        adapters = build_adapters(student, teacher, cfg.hints, data.sample_input(2), where) if cfg.hints else []
        trained: nn.Module = StudentWithAdapters(student, adapters) if adapters else student
        terms: list[Any] = []
        if cfg.loss is not None:
            terms.append(LogitDistillTerm(cfg.loss, outputs.logits, label_smoothing=tcfg.label_smoothing,
                                          epoch=outputs.epoch))
        with taps(student, [h.student for h in cfg.hints]) as s_taps:
            if adapters:
                terms.append(HintTerm(cfg.hints, adapters, lambda: [t.value for t in s_taps], outputs.features))
            if tcfg.epochs > 0:
                outputs.build_cache(data.x_train, tcfg.epochs, _why_not_cached(cfg, tcfg, data))
            trainer = IndexedTrainer(trained, data, tcfg, loss_terms=terms, callbacks=[outputs],
                                     checkpoint_dir=checkpoint_dir, log=log, progress=progress)
            t0 = time.perf_counter()
            result = trainer.fit(resume=resume and checkpoint_dir is not None)
            seconds = time.perf_counter() - t0
    finally:
        outputs.close()
    student = trainer.model.student if adapters else trainer.model
    t_logits = predict_logits(teacher, data.x_test) if len(data.y_test) else None
    agreement = None
    if t_logits is not None:
        agreement = float((predict_logits(student, data.x_test).argmax(1) == t_logits.argmax(1)).float().mean())
    metrics = {
        "teacher": teacher_name,
        "loss": cfg.loss.to_dict() if cfg.loss is not None else None,
        "hints": [h.to_dict() for h in cfg.hints],
        "teacher_params": _n_params(teacher),
        "student_params": _n_params(student),
        "teacher_test_accuracy": None if t_logits is None else float((t_logits.argmax(1) == data.y_test).float().mean()),
        "test_agreement_with_teacher": agreement,
        "teacher_cache": outputs.report,
        "training": {
            "epochs_run": result.epochs_run,
            "best_val_accuracy": result.best_val_accuracy,
            "stopped_early": result.stopped_early,
            "seconds_this_session": round(seconds, 2),
            "history": result.history,
        },
    }
    return student, metrics


def _student(student: nn.Module | ModelConfig | str, data: DataBundle, seed: int) -> nn.Module:
    if isinstance(student, nn.Module):
        return copy.deepcopy(student)
    mc = ModelConfig.checked("distill.model", name=student) if isinstance(student, str) else student
    spec = mc.spec(data.input_shape, data.num_classes)
    torch.manual_seed(seed)
    return build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])


def distill(student: nn.Module | ModelConfig | str, teacher: nn.Module | str | Path | None,
            cfg: DistillStage | Mapping[str, Any] | None, data: DataBundle, **kwargs: Any) -> nn.Module:
    """A copy of `student` (a module, a ModelConfig or a zoo name, built for `data`) trained to
    imitate `teacher` (a module or an artifact folder; None: `cfg.teacher`) as `cfg` says. Keyword
    arguments: those of `distill_with_metrics` (train_defaults, checkpoint_dir, resume, seed, log, progress)."""
    from frugalml import artifact

    cfg = as_config(cfg)
    teacher = teacher if teacher is not None else cfg.teacher
    if teacher is None:
        raise ConfigError("distill: no teacher: pass a model or an artifact folder")
    t = artifact.load(teacher) if isinstance(teacher, (str, Path)) else teacher
    return distill_with_metrics(_student(student, data, kwargs.get("seed", 0)), t, cfg, data, **kwargs)[0]


def _layer_dropped(source: nn.Module, layers: int | list[int], ctx: StageContext, where: str) -> tuple[nn.Module, dict]:
    """A copy of `source` (a Hugging Face encoder) keeping `layers`, and its ModelSpec."""
    from frugalml import hf
    from frugalml.hf.model import HFEncoder, drop_layers, is_bert_style

    if not isinstance(source, HFEncoder) or not is_bert_style(source.backbone):
        raise ConfigError(f"{where}.layers: layer dropping needs a Hugging Face BERT-style encoder (hf: model), "
                          f"not {type(source).__name__}")
    total = len(source.backbone.encoder.layer)
    keep = even_layers(total, layers) if isinstance(layers, int) else list(layers)
    if isinstance(layers, int) and layers >= total:
        raise ConfigError(f"{where}.layers: the model has {total} layers; keep fewer than that")
    student = drop_layers(copy.deepcopy(source), keep)
    ctx.log.info("distill: student keeps layers %s of %d", keep, total)
    return student, hf.spec_of(student, ctx.model_spec["name"], ctx.model_spec["input_shape"])


@register_stage(DistillStage)
def run_distill_stage(model: nn.Module | None, cfg: DistillStage, ctx: StageContext) -> nn.Module:
    from frugalml.compress.ensemble import Ensemble

    where = f"stages.{cfg.name}"
    if cfg.teacher is None:
        raise ConfigError(f"{where}.teacher: name the teacher: an earlier stage or an artifact folder")
    ref = resolve(cfg.teacher, ctx, f"{where}.teacher")
    if cfg.model is not None:
        ctx.model_spec = cfg.model.spec(ctx.data.input_shape, ctx.data.num_classes)
        student = _student(cfg.model, ctx.data, ctx.seed)
    elif cfg.layers is not None:
        student, ctx.model_spec = _layer_dropped(model if model is not None else ref.model, cfg.layers, ctx, where)
    elif model is None:
        raise ConfigError(f"{where}.model: there is no parent model to distil into; name the student's architecture")
    elif isinstance(model, Ensemble) or getattr(model, "frugal_runtime", None) is not None:
        raise ConfigError(f"{where}.model: the parent {cfg.parent or 'stage'} is not a trainable float model; name "
                          "the student's architecture (model:) or another parent")
    else:
        student = model
    student, metrics = distill_with_metrics(
        student, ref.model, cfg, ctx.data, train_defaults=ctx.train_defaults, checkpoint_dir=ctx.workdir / "checkpoint",
        resume=ctx.resume, seed=ctx.seed, log=ctx.log, where=where, teacher_name=cfg.teacher,
    )
    ctx.extra_metrics["training"] = metrics.pop("training")
    ctx.extra_metrics["distillation"] = metrics
    return student

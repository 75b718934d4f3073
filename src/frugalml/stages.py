"""Stage registry: a typed config class per technique and one handler registered for it.

A handler has the signature ``handler(model, config, ctx) -> model``. The pipeline never switches
on stage kinds: it looks the handler up by the config's class. Adding a technique means one new file
and one ``@register_stage(MyConfig)`` line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from frugalml.config import Config
from frugalml.registry import Registry


class StageConfig(Config):
    """Base of every stage config. Subclasses set ``kind: Literal["name"] = "name"``."""

    kind: str
    name: str | None = None  # defaults to the kind (made unique by the recipe loader)
    parent: str | None = None  # the stage whose model this one starts from; default: the previous one

    def starts_fresh(self) -> bool:
        """True when the stage makes its own model and so has no parent (e.g. training a new one)."""
        return False


@dataclass
class StageContext:
    """What a stage handler may use besides the model. Handlers must not write outside `stage_dir`."""

    data: Any  # frugalml.data.DataBundle
    model_spec: dict  # the ModelSpec of the incoming model (see frugalml.artifact)
    stage_dir: Path
    train_defaults: Any = None  # frugalml.train.TrainConfig from the recipe's `train:` section
    measure_config: Any = None  # frugalml.measure.MeasureConfig
    seed: int = 0
    resume: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("frugalml"))
    parent_metrics: dict | None = None
    # stages may leave extra metrics here (e.g. candidate backends); merged into results.json
    extra_metrics: dict = field(default_factory=dict)
    # stages that change the model's format/structure update this (saved with the artifact)
    artifact_meta: dict = field(default_factory=dict)


Handler = Callable[[nn.Module, StageConfig, StageContext], nn.Module]

STAGES: Registry[tuple[type[StageConfig], Handler]] = Registry("stage kind")


def register_stage(config_cls: type[StageConfig]) -> Callable[[Handler], Handler]:
    kind = config_cls.model_fields["kind"].default
    if not isinstance(kind, str):
        raise TypeError(f"{config_cls.__name__}.kind needs a Literal default")

    def deco(fn: Handler) -> Handler:
        STAGES.register(kind, (config_cls, fn))
        return fn

    return deco


def stage_configs() -> list[type[StageConfig]]:
    return [cls for _, (cls, _) in STAGES.items()]


def handler_for(cfg: StageConfig) -> Handler:
    return STAGES.get(cfg.kind)[1]

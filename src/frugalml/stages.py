"""Stage registry: a typed config class per technique and one handler registered for it.

A handler has the signature ``handler(model, config, ctx) -> model``. The pipeline never switches
on stage kinds: it looks the handler up by the config's class (the torchao pattern: a config, a
handler registered for its type, one verb). Adding a technique means one new file, one
``@register_stage(MyConfig)`` line, and its module name in ``STAGE_MODULES``.

A kind may have several config classes, told apart by a second key (``prune`` has ``method:
structured | unstructured | nm``): the kind's base class is registered with ``variant_key`` and
each variant joins with ``add_variant``. In YAML that is a nested discriminated union.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

import torch.nn as nn
from pydantic import Discriminator, Tag

from frugalml.config import Config, SafeName
from frugalml.errors import ConfigError

if TYPE_CHECKING:
    from frugalml.data.bundle import DataBundle
    from frugalml.measure.config import MeasureConfig
    from frugalml.train.config import TrainConfig

# Modules whose import registers stage kinds. A technique adds itself here once.
STAGE_MODULES = (
    "frugalml.builtin_stages",
    "frugalml.compress.prune",
    "frugalml.compress.quantize",
    "frugalml.compress.distill",
    "frugalml.compress.lowrank",
    "frugalml.compress.ensemble",
    "frugalml.compress.average",
    "frugalml.compress.runtime",
    "frugalml.datawise.transfer",
    "frugalml.datawise.semisup",
    "frugalml.datawise.label_issues",
)


class StageConfig(Config):
    """Base of every stage config. Subclasses set ``kind: Literal["name"] = "name"``."""

    kind: str
    name: SafeName | None = None  # defaults to the kind (made unique by the recipe loader)
    parent: str | None = None  # the stage whose model this one starts from; default: the previous one
    # most techniques need a float torch model; a stage that can start from a quantized one says so
    accepts_quantized: ClassVar[bool] = False

    def starts_fresh(self) -> bool:
        """True when the stage makes its own model and so has no parent (e.g. training a new one)."""
        return False

    def trains(self) -> bool:
        """True when the stage may train, so every process of a distributed run takes part; a stage
        that only converts or measures is built and timed by rank 0 alone."""
        return True


@dataclass
class StageContext:
    """What a stage handler may use besides the model. Handlers must not write outside `stage_dir`."""

    data: DataBundle
    model_spec: dict  # the ModelSpec of the incoming model (see frugalml.artifact)
    stage_dir: Path
    train_defaults: TrainConfig | None = None  # the recipe's `train:` section
    measure_config: MeasureConfig | None = None
    seed: int = 0
    resume: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("frugalml"))
    parent_metrics: dict | None = None
    # stages may leave extra metrics here (e.g. candidate backends); merged into results.json
    extra_metrics: dict = field(default_factory=dict)
    # stages that change the model's format/structure update this (saved with the artifact)
    artifact_meta: dict = field(default_factory=dict)
    # models of earlier stages by name (teachers, ensemble members); read-only for handlers
    stage_models: dict[str, nn.Module] = field(default_factory=dict)
    # user factories (`package.module:factory`) artifacts may import: True = any (see artifact.load)
    trust_code: bool | frozenset[str] = frozenset()

    @property
    def workdir(self) -> Path:
        """Scratch space and checkpoints of this stage (kept for --resume, not part of the artifact)."""
        return self.stage_dir / "work"


Handler = Callable[[Any, Any, StageContext], nn.Module]


@dataclass
class StageKind:
    """One `kind:` of the recipe: its base config, its handler, and its variants (if any)."""

    kind: str
    config: type[StageConfig]
    handler: Handler
    variant_key: str | None = None
    variants: dict[str, type[StageConfig]] = field(default_factory=dict)
    default_variant: str | None = None

    def members(self) -> list[type[StageConfig]]:
        return list(self.variants.values()) if self.variant_key else [self.config]


_KINDS: dict[str, StageKind] = {}
_HANDLERS: dict[type[StageConfig], Handler] = {}


def _literal_default(cls: type[StageConfig], key: str) -> str:
    value = cls.model_fields[key].default if key in cls.model_fields else None
    if not isinstance(value, str):
        raise TypeError(f"{cls.__name__}.{key} needs a Literal default")
    return value


def register_stage(
    config_cls: type[StageConfig], *, variant_key: str | None = None, default_variant: str | None = None
) -> Callable[[Handler], Handler]:
    """Register `handler` for `config_cls` (and its subclasses). With `variant_key`, `config_cls` is
    the base of a kind whose concrete configs are added with `add_variant`."""
    kind = _literal_default(config_cls, "kind")

    def deco(fn: Handler) -> Handler:
        if kind in _KINDS and _KINDS[kind].config is not config_cls:
            raise ValueError(f"stage kind {kind!r} is already registered")
        _KINDS[kind] = StageKind(kind, config_cls, fn, variant_key, default_variant=default_variant)
        _HANDLERS[config_cls] = fn
        stage_union.cache_clear()
        return fn

    return deco


def add_variant(config_cls: type[StageConfig]) -> type[StageConfig]:
    """Add a concrete config to the kind its base class registered (usable as a class decorator)."""
    kind = _KINDS.get(_literal_default(config_cls, "kind"))
    if kind is None or kind.variant_key is None or not issubclass(config_cls, kind.config):
        raise TypeError(f"{config_cls.__name__}: no registered stage kind with variants it belongs to")
    value = _literal_default(config_cls, kind.variant_key)
    if value in kind.variants and kind.variants[value] is not config_cls:
        raise ValueError(f"{kind.kind} {kind.variant_key} {value!r} is already registered")
    kind.variants[value] = config_cls
    stage_union.cache_clear()
    return config_cls


def load_stage_modules() -> None:
    for name in STAGE_MODULES:
        importlib.import_module(name)


def stage_kinds() -> dict[str, StageKind]:
    load_stage_modules()
    return dict(sorted(_KINDS.items()))


def stage_configs() -> list[type[StageConfig]]:
    """Every concrete stage config (one per kind, or one per variant)."""
    return [cls for k in stage_kinds().values() for cls in k.members()]


def handler_for(cfg: StageConfig) -> Handler:
    for cls in type(cfg).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise ConfigError(f"no handler registered for stage config {type(cfg).__name__}")


def _tag(key: str, default: str | None) -> Callable[[Any], str | None]:
    def get(value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get(key, default)
        return getattr(value, key, None)

    get.__name__ = f"{key}_of"
    return get


@cache
def stage_union() -> Any:
    """The pydantic type of one entry of `stages:`: a union discriminated by `kind` (and, for kinds
    with variants, by the variant key)."""
    load_stage_modules()
    options = []
    for kind in _KINDS.values():
        if kind.variant_key is None:
            options.append(Annotated[kind.config, Tag(kind.kind)])
            continue
        if not kind.variants:
            continue
        inner = tuple(Annotated[cls, Tag(v)] for v, cls in kind.variants.items())
        choice = _discriminated(inner, _tag(kind.variant_key, kind.default_variant))
        options.append(Annotated[choice, Tag(kind.kind)])
    return _discriminated(tuple(options), _tag("kind", None))


def _discriminated(options: tuple, tag: Callable[[Any], str | None]) -> Any:
    if len(options) == 1:  # nothing to choose between; the member's Literal fields still check values
        return options[0]
    return Annotated[Union[options], Discriminator(tag)]  # noqa: UP007

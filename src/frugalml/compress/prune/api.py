"""The `prune` verb, the `prune` stage handler, and the registry of pruning methods they dispatch
through (keyed by config class, the torchao way: neither ever branches on the method).

A method is a config class (a `PruneConfig` subclass with `method: Literal["name"] = "name"`) and a
function `(model, cfg, inputs: PruneInputs) -> (model, metrics)` registered for it with
`@register_method(ConfigCls)`, which also adds the class to the stage's YAML schema. The function
gets its own copy of the model (prune it in place or return a new one), must return a plain module
(no hooks, masks or reparametrizations) and metrics holding at least `sparsity`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from frugalml.compress.prune._finetune import finetune
from frugalml.compress.prune._layers import check_layer_names
from frugalml.compress.prune.config import FinetuneConfig, MaskPruneConfig, PruneConfig
from frugalml.errors import ConfigError
from frugalml.stages import StageContext, add_variant, register_stage

if TYPE_CHECKING:
    from frugalml.data.bundle import DataBundle
    from frugalml.measure.config import MeasureConfig
    from frugalml.train.config import TrainConfig

DEFAULT_METHOD = "unstructured"  # what `kind: prune` without `method:` means


@dataclass
class PruneInputs:
    """What a pruning method may use besides the model and its config (built from the stage's
    StageContext, or from the keyword arguments of `prune`)."""

    data: DataBundle
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("frugalml"))
    workdir: Path | None = None  # scratch space and fine-tuning checkpoints
    train_defaults: TrainConfig | None = None  # the recipe's `train:` section
    measure_config: MeasureConfig | None = None
    seed: int = 0
    resume: bool = False
    where: str = "prune"  # how user errors name this stage (`stages.<name>` in a recipe)
    teacher: nn.Module | None = None  # the unpruned model, when fine-tuning distils from it

    @classmethod
    def from_stage(cls, ctx: StageContext, cfg: PruneConfig) -> PruneInputs:
        return cls(data=ctx.data, log=ctx.log, workdir=ctx.workdir, train_defaults=ctx.train_defaults,
                   measure_config=ctx.measure_config, seed=ctx.seed, resume=ctx.resume,
                   where=f"stages.{cfg.name}" if cfg.name else "prune")

    def finetune(self, model: nn.Module, ft: FinetuneConfig | None, **kwargs: Any) -> dict | None:
        """Fine-tune `model` in place (see _finetune.finetune for the keyword arguments)."""
        return finetune(model, ft, self, **kwargs)


PruneMethod = Callable[[nn.Module, Any, PruneInputs], tuple[nn.Module, dict]]
_METHODS: dict[type[PruneConfig], PruneMethod] = {}


def register_method(config_cls: type[PruneConfig]) -> Callable[[PruneMethod], PruneMethod]:
    """Register `fn(model, cfg, inputs) -> (model, metrics)` as the method of `config_cls`, which
    joins the `prune` stage kind (YAML `method: <its Literal default>`)."""

    def deco(fn: PruneMethod) -> PruneMethod:
        add_variant(config_cls)
        _METHODS[config_cls] = fn
        return fn

    return deco


def prune_methods() -> dict[str, type[PruneConfig]]:
    """Method name -> config class, for every registered method."""
    return {cls.model_fields["method"].default: cls for cls in _METHODS}


def method_for(cfg: PruneConfig) -> PruneMethod:
    for cls in type(cfg).__mro__:
        if cls in _METHODS:
            return _METHODS[cls]
    raise ConfigError(f"prune: {type(cfg).__name__} is not a pruning method; use one of "
                      f"{', '.join(c.__name__ for c in _METHODS)}")


def as_config(cfg: PruneConfig | Mapping[str, Any]) -> PruneConfig:
    """A method config from a config object or a mapping with a `method` key (default unstructured)."""
    if isinstance(cfg, PruneConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"prune: expected a pruning config ({', '.join(c.__name__ for c in _METHODS)}) "
                          f"or a mapping with a `method` key, got {type(cfg).__name__}")
    methods = prune_methods()
    name = cfg.get("method", DEFAULT_METHOD)
    if name not in methods:
        raise ConfigError(f"prune.method: unknown method {name!r}; allowed: {', '.join(methods)}")
    return methods[name].checked("prune", dict(cfg))


def apply(model: nn.Module, cfg: PruneConfig | Mapping[str, Any], inputs: PruneInputs) -> tuple[nn.Module, dict]:
    """Prune a copy of `model` with the method registered for `cfg`; returns (model, metrics)."""
    cfg = as_config(cfg)
    method = method_for(cfg)
    check_layer_names(model, cfg.ignore, "ignore")
    check_layer_names(model, cfg.targets, "targets")
    model = copy.deepcopy(model)
    if cfg.finetune is not None and cfg.finetune.distill > 0:
        inputs = replace(inputs, teacher=copy.deepcopy(model))  # the model as it was before pruning
    pruned, metrics = method(model, cfg, inputs)
    if isinstance(cfg, MaskPruneConfig):
        pruned.frugal_sparse = True  # its zeros are masks: later fine-tuning keeps them (KeepZeros)
    return pruned.eval(), {"method": cfg.method, **metrics}


def prune_with_metrics(
    model: nn.Module,
    cfg: PruneConfig | Mapping[str, Any],
    data: DataBundle,
    *,
    train_defaults: TrainConfig | None = None,
    measure_config: MeasureConfig | None = None,
    workdir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    log: logging.Logger | None = None,
) -> tuple[nn.Module, dict]:
    """Apply `cfg` to a copy of `model`; returns (pruned plain module, metrics)."""
    inputs = PruneInputs(data=data, log=log or logging.getLogger("frugalml"),
                         workdir=Path(workdir) if workdir is not None else None, train_defaults=train_defaults,
                         measure_config=measure_config, seed=seed, resume=resume)
    return apply(model, cfg, inputs)


def prune(
    model: nn.Module,
    cfg: PruneConfig | Mapping[str, Any],
    data: DataBundle,
    *,
    log: logging.Logger | None = None,
    workdir: str | Path | None = None,
    train_defaults: TrainConfig | None = None,
    measure_config: MeasureConfig | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune a copy of `model` as `cfg` says (fine-tuning on `data` if asked); the input is untouched.
    Structured pruning returns a physically smaller module; the mask methods return zeros baked in."""
    return prune_with_metrics(model, cfg, data, log=log, workdir=workdir, train_defaults=train_defaults,
                              measure_config=measure_config, seed=seed)[0]


@register_stage(PruneConfig, variant_key="method", default_variant=DEFAULT_METHOD)
def run_prune_stage(model: nn.Module | None, cfg: PruneConfig, ctx: StageContext) -> nn.Module:
    if model is None:
        raise ConfigError(f"stages.{cfg.name or 'prune'}: prune needs a model from an earlier stage")
    pruned, metrics = apply(model, cfg, PruneInputs.from_stage(ctx, cfg))
    fmt = cfg.artifact_format()
    metrics["storage"] = fmt or "torch-fp32"
    ctx.extra_metrics.update({"sparsity": metrics["sparsity"], "method": cfg.method, "pruning": metrics})
    if fmt is not None:
        ctx.artifact_meta["format"] = fmt
    else:  # a dense model: drop a format inherited from a sparse parent
        ctx.artifact_meta.pop("format", None)
    ctx.artifact_meta["pruning"] = {"method": cfg.method, "sparsity": metrics["sparsity"]}
    return pruned

"""Pruning: the `prune` stage and the `prune()` verb (one config class for YAML and Python).

    from frugalml.compress.prune import PruneStage, prune
    small = prune(model, PruneStage(method="structured", ratio=0.5, finetune={"epochs": 2}), data)

Methods, one file each: `unstructured` (magnitude masks, global/per layer, one-shot or AGP),
`structured` (Torch-Pruning dependency graph; channels, hidden units, heads), `nm` (N:M masks).
`sensitivity` analyses per-layer sensitivity and feeds `per_layer: sensitivity`.
The returned model is always a plain module: no pruning hooks, masks or reparametrizations.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch.nn as nn

from frugalml.compress import sparse_storage  # noqa: F401  (registers the torch-sparse format)
from frugalml.compress.prune._common import check_layer_names, finetune, selected, weight_params
from frugalml.compress.prune.config import FinetuneConfig, PruneStage
from frugalml.compress.prune.nm import CPU_NOTE, apply_nm_masks
from frugalml.compress.prune.sensitivity import allocate_ratios, read_table, run_sensitivity, sensitivity
from frugalml.compress.prune.structured import prune_structured
from frugalml.compress.prune.unstructured import AGPCallback, MagnitudeMasks, bake_masks
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.stages import StageContext, register_stage

__all__ = [
    "FinetuneConfig",
    "PruneStage",
    "prune",
    "prune_with_metrics",
    "run_prune_stage",
    "run_sensitivity",
    "sensitivity",
]


def _zero_fraction(params: list[tuple[str, nn.Module, str]]) -> float:
    total = sum(getattr(m, p).numel() for _, m, p in params)
    zeros = sum(int((getattr(m, p) == 0).sum()) for _, m, p in params)
    return zeros / max(total, 1)


def _model_sparsity(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(int((p == 0).sum()) for p in model.parameters()) / max(total, 1)


def _masked_weights(model: nn.Module, cfg: PruneStage) -> list[tuple[str, nn.Module, str]]:
    check_layer_names(model, cfg.ignore, "ignore")
    check_layer_names(model, cfg.targets, "targets")
    params = weight_params(model, cfg.targets, cfg.ignore)
    if not params:
        raise ConfigError("prune: targets/ignore leave no conv, linear, recurrent or attention weights to prune")
    return params


def _ft_dir(workdir: Path | None) -> Path | None:
    return workdir / "finetune" if workdir is not None else None


def prune_with_metrics(
    model: nn.Module,
    cfg: PruneStage,
    data: Any,
    *,
    train_defaults: Any = None,
    measure_config: Any = None,
    workdir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    log: logging.Logger | None = None,
) -> tuple[nn.Module, dict]:
    """Apply `cfg` to a copy of `model`; returns (pruned plain module, metrics)."""
    log = log or logging.getLogger("frugalml")
    workdir = Path(workdir) if workdir is not None else None
    model = copy.deepcopy(model)
    seeded = {"seed": seed} if getattr(train_defaults, "seed", None) is None else {}
    # the model as it was before pruning, when fine-tuning distils from it
    teacher = copy.deepcopy(model) if cfg.finetune is not None and cfg.finetune.distill > 0 else None
    ft_kwargs = {"checkpoint_dir": _ft_dir(workdir), "resume": resume, "log": log, "extra": seeded,
                 "teacher": teacher}  # fmt: skip

    if cfg.method == "structured":
        ratio_by_layer = None
        if cfg.per_layer == "sensitivity":
            table = (read_table(cfg.sensitivity_table) if cfg.sensitivity_table else
                     sensitivity(model, data, method="structured",
                                 out_dir=workdir / "sensitivity" if workdir is not None else None))  # fmt: skip
            allocated = allocate_ratios(table, cfg.ratio or 0.0, cfg.max_layer_ratio)
            ratio_by_layer = {k: v for k, v in allocated.items() if selected(k, cfg.targets, cfg.ignore)}
        metrics = prune_structured(
            model, cfg, data, train_defaults=train_defaults, measure_config=measure_config,
            ratio_by_layer=ratio_by_layer, workdir=workdir, resume=resume, seed=seed, log=log, teacher=teacher,
        )  # fmt: skip
        if ratio_by_layer is not None:
            metrics["per_layer_ratios"] = {k: round(v, 4) for k, v in ratio_by_layer.items()}
        metrics["sparsity"] = round(1 - metrics["params_after"] / max(metrics["params_before"], 1), 6)
        metrics["sparsity_meaning"] = "fraction of parameters removed"
        return model.eval(), metrics

    params = _masked_weights(model, cfg)
    if cfg.method == "unstructured":
        masks = MagnitudeMasks(params, cfg.scope)
        ft = None
        if cfg.schedule == "gradual":
            agp = AGPCallback(masks, cfg.ratio)
            ft_kwargs["extra"] = {**seeded, "early_stopping": None}  # the schedule needs every epoch
            ft = finetune(model, data, cfg.finetune, train_defaults, callbacks=[agp], **ft_kwargs)
        else:
            masks.set_sparsity(cfg.ratio)
            if cfg.finetune is not None:
                ft = finetune(model, data, cfg.finetune, train_defaults, **ft_kwargs)
        masks.set_sparsity(cfg.ratio)  # exact final target (a no-op unless training was cut short)
        masks.bake()
        metrics = {"method": "unstructured", "scope": cfg.scope, "schedule": cfg.schedule, "target": cfg.ratio}
    else:
        masked, skipped = apply_nm_masks(params, cfg.n, cfg.m)
        if not masked:
            raise UnsupportedError(
                f"prune.method nm: no selected layer has an input width divisible by m={cfg.m}; "
                f"skipped: {', '.join(skipped[:8])}"
            )
        ft = finetune(model, data, cfg.finetune, train_defaults, **ft_kwargs) if cfg.finetune else None
        bake_masks(masked)
        params = masked
        metrics = {"method": "nm", "pattern": f"{cfg.n}:{cfg.m}", "dense_layers": skipped, "note": CPU_NOTE}
    metrics.update({
        "sparsity": round(_zero_fraction(params), 6),
        "sparsity_meaning": "fraction of zeros in the pruned weight tensors",
        "model_sparsity": round(_model_sparsity(model), 6),
        "pruned_tensors": {f"{n}.{p}": round(float((getattr(m, p) == 0).float().mean()), 4) for n, m, p in params},
        "finetune": ft,
    })  # fmt: skip
    return model.eval(), metrics


def prune(
    model: nn.Module,
    cfg: PruneStage,
    data: Any,
    *,
    log: logging.Logger | None = None,
    workdir: str | Path | None = None,
    train_defaults: Any = None,
    measure_config: Any = None,
    seed: int = 0,
) -> nn.Module:
    """Prune a copy of `model` as `cfg` says (fine-tuning on `data` if asked); the input is untouched.
    Structured pruning returns a physically smaller module; the others return zeros baked in."""
    if isinstance(cfg, dict):
        cfg = PruneStage(**cfg)
    return prune_with_metrics(model, cfg, data, train_defaults=train_defaults, measure_config=measure_config,
                              workdir=workdir, seed=seed, log=log)[0]  # fmt: skip


@register_stage(PruneStage)
def run_prune_stage(model: nn.Module | None, cfg: PruneStage, ctx: StageContext) -> nn.Module:
    if model is None:
        raise ConfigError(f"stages.{cfg.name or 'prune'}: prune needs a model from an earlier stage")
    pruned, metrics = prune_with_metrics(
        model, cfg, ctx.data, train_defaults=ctx.train_defaults, measure_config=ctx.measure_config,
        workdir=ctx.stage_dir / "work", seed=ctx.seed, resume=ctx.resume, log=ctx.log,
    )  # fmt: skip
    storage = "torch-sparse" if cfg.use_sparse_storage() else "torch-fp32"
    metrics["storage"] = storage
    if cfg.method == "nm":
        metrics["latency_note"] = CPU_NOTE
    ctx.extra_metrics.update({"sparsity": metrics["sparsity"], "method": cfg.method, "pruning": metrics})
    if storage == "torch-sparse":
        ctx.artifact_meta["format"] = "torch-sparse"
    else:
        ctx.artifact_meta.pop("format", None)
    ctx.artifact_meta["pruning"] = {"method": cfg.method, "sparsity": metrics["sparsity"]}
    return pruned

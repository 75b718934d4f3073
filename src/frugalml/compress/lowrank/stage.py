"""The `lowrank` stage and the `lowrank()` verb: factorize, time each layer both ways, fine-tune.

    from frugalml.compress.lowrank import LowRankStage, lowrank
    small = lowrank(mlp, LowRankStage(energy=0.9, epochs=3), data)
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from frugalml.compress.distill.hints import layer_candidates
from frugalml.compress.distill.losses import KD
from frugalml.compress.lowrank.layers import (
    FACTORIZED,
    SPEC_KEY,
    energy_kept,
    factorize,
    factorized_params,
    full_rank,
    kind_of,
    rank_for,
    replace,
    unfoldings,
)
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import TrainConfig, Trainer, TrainOverrides, merge_train, require_labels
from frugalml.train.evaluate import evaluate

SLOWER = 1.05  # a factorized layer more than 5% slower than the dense one (median, batch 64) is "slower"


class LowRankStage(StageConfig):
    """Factorize Linear layers (and convolutions) by truncated SVD into thinner layers, rank per
    layer by `ratio` of its full rank or by retained singular-value `energy` (or exact `ranks`), then
    fine-tune. Layers whose factorization would not hold fewer parameters stay dense; each layer is
    timed dense and factorized at batch 64, and slower factorizations are reported (or skipped)."""

    kind: Literal["lowrank"] = "lowrank"
    ratio: float | None = Field(None, gt=0, le=1, description="keep this fraction of each layer's full rank")
    energy: float | None = Field(None, gt=0, le=1, description="smallest rank whose singular values keep this "
                                 "fraction of the squared sum (the 'energy')")
    ranks: dict[str, int | list[int]] = Field(default_factory=dict, description="exact ranks by layer name "
                                              "(tucker2: [r_in, r_out]); they win over ratio/energy")
    conv: Literal["svd", "tucker2", "none"] = Field("svd", description="convolutions: SVD of the reshaped kernel "
                                                    "(k x k conv + 1x1), Tucker-2 (1x1 + k x k core + 1x1), or leave dense")
    targets: list[str] | None = Field(None, description="only these layers (names or prefixes); default all")
    ignore: list[str] = Field(default_factory=list, description="layers (names or prefixes) left dense")
    skip_slower: bool = Field(False, description="keep dense the layers measured slower when factorized")
    skip_classifier: bool = Field(True, description="keep the final Linear (the logits) dense: it is small "
                                  "and every error there is an error in the output")
    epochs: int | None = Field(None, ge=0, description="fine-tuning epochs; default the train section's")
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    distill: KD | None = Field(None, description="distil the fine-tuning from the unfactorized model")

    @model_validator(mode="after")
    def _one_rule(self) -> LowRankStage:
        if self.ratio is not None and self.energy is not None:
            raise ValueError("ratio and energy both set; choose one rule for the ranks")
        if self.ratio is None and self.energy is None and not self.ranks:
            raise ValueError("set ratio, energy or ranks: how much of each layer to keep")
        return self


def as_config(cfg: LowRankStage | Mapping[str, Any]) -> LowRankStage:
    if isinstance(cfg, LowRankStage):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"lowrank: expected a LowRankStage or a mapping, got {type(cfg).__name__}")
    return LowRankStage.checked("lowrank", dict(cfg))


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def eligible_layers(model: nn.Module, conv: str) -> dict[str, nn.Module]:
    """Layers that can be factorized: Linear and ungrouped Conv2d not already inside a factorized one
    (nor inside nn.MultiheadAttention, which reads its projections' weights directly)."""
    inside = [n for n, m in model.named_modules() if isinstance(m, (*FACTORIZED, nn.MultiheadAttention))]
    return {n: m for n, m in model.named_modules()
            if n and kind_of(m, conv) is not None and not _matches(n, inside)}


def _check_names(model: nn.Module, eligible: dict, cfg: LowRankStage, where: str) -> None:
    names = {n for n, _ in model.named_modules() if n}
    for key, values in (("targets", cfg.targets or []), ("ignore", cfg.ignore)):
        for v in values:
            if v not in names:
                raise ConfigError(f"{where}.{key}: no layer {v!r}; candidates: {layer_candidates(model)}")
    for name in cfg.ranks:
        if name not in eligible:
            allowed = ", ".join(eligible) or "none"
            raise ConfigError(f"{where}.ranks.{name}: not a layer that can be factorized; candidates: {allowed}")


def _ranks(name: str, layer: nn.Module, kind: str, cfg: LowRankStage, where: str) -> tuple[list[int], list[float]]:
    full = full_rank(layer, kind)  # type: ignore[arg-type]
    svals = [torch.linalg.svdvals(m) for m in unfoldings(layer, kind)]  # type: ignore[arg-type]
    if name in cfg.ranks:
        given = cfg.ranks[name]
        ranks = [int(r) for r in given] if isinstance(given, list) else [int(given)] * len(full)
        if len(ranks) != len(full):
            raise ConfigError(f"{where}.ranks.{name}: {kind} takes {len(full)} rank(s), got {given}")
        for r, f in zip(ranks, full):
            if not 1 <= r <= f:
                raise ConfigError(f"{where}.ranks.{name}: rank {r} is outside 1..{f}, the layer's full rank "
                                  f"(weight {list(layer.weight.shape)})")  # type: ignore[union-attr]
    else:
        ranks = [rank_for(s, cfg.ratio, cfg.energy) for s in svals]
    return ranks, [energy_kept(s, r) for s, r in zip(svals, ranks)]


def _time_ms(module: nn.Module, x: torch.Tensor, iters: int = 15) -> float:
    with torch.no_grad():
        for _ in range(3):
            module(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _layer_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:  # returns None: output unchanged
            seen.setdefault(name, inputs[0].detach())

        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _forward_error(model: nn.Module, x: torch.Tensor) -> str | None:
    try:
        with torch.no_grad():
            model.eval()(x)
    except (RuntimeError, AttributeError, TypeError, ValueError) as e:
        return (str(e).splitlines() or [type(e).__name__])[0][:120]
    return None


def _as_reported(values: list, kind: str) -> Any:
    return values if kind == "tucker2" else values[0]  # Tucker-2 has two ranks (in, out); SVD one


def _measure_layer(layer: nn.Module, new: nn.Module, kind: str, ranks: list[int], kept: list[float],
                   x: torch.Tensor) -> dict:
    """What the factorization of one layer costs and loses: parameters, weight error, time at batch 64."""
    w = layer.weight.detach().double()  # type: ignore[union-attr]
    err = float((new.dense_weight().double() - w).norm() / w.norm().clamp_min(1e-30))  # type: ignore[operator]
    dense_ms, fact_ms = _time_ms(layer, x), _time_ms(new, x)
    return {
        "kind": kind, "rank": _as_reported(ranks, kind), "full_rank": _as_reported(full_rank(layer, kind), kind),  # type: ignore[arg-type]
        "energy_kept": _as_reported([round(k, 5) for k in kept], kind), "relative_error": round(err, 6),
        "params_dense": sum(p.numel() for p in layer.parameters()),
        "params_factorized": sum(p.numel() for p in new.parameters()),
        "dense_ms_b64": round(dense_ms, 4), "factorized_ms_b64": round(fact_ms, 4),
        "slower_than_dense": fact_ms > SLOWER * dense_ms,
    }


def factorize_model(model: nn.Module, cfg: LowRankStage, data: DataBundle, where: str) -> dict:
    """Factorize `model` in place; returns the plan and per-layer metrics."""
    eligible = eligible_layers(model, cfg.conv)
    _check_names(model, eligible, cfg, where)
    chosen = {n: m for n, m in eligible.items()
              if (cfg.targets is None or _matches(n, cfg.targets)) and not _matches(n, cfg.ignore)}
    if cfg.ratio is None and cfg.energy is None:  # exact ranks only
        chosen = {n: m for n, m in chosen.items() if n in cfg.ranks}
    skipped: dict[str, str] = {}
    last = list(eligible)[-1] if eligible else None
    if cfg.skip_classifier and last in chosen and last not in cfg.ranks and isinstance(eligible[last], nn.Linear) \
            and eligible[last].out_features == data.num_classes:
        del chosen[last]
        skipped[last] = "the classifier (skip_classifier)"
    inputs = _layer_inputs(model, list(chosen), data.sample_input(64))
    inputs_x = data.sample_input(2)
    plan: dict[str, dict] = {}
    layers: dict[str, dict] = {}
    for name, layer in chosen.items():
        kind = kind_of(layer, cfg.conv)
        assert kind is not None
        ranks, kept = _ranks(name, layer, kind, cfg, where)
        dense_p = sum(p.numel() for p in layer.parameters())
        fact_p = factorized_params(layer, kind, ranks)  # type: ignore[arg-type]
        if fact_p >= dense_p and name not in cfg.ranks:
            skipped[name] = f"rank {ranks} would hold {fact_p} parameters, not fewer than {dense_p}"
            continue
        if name not in inputs:
            skipped[name] = "not used by the forward pass"
            continue
        new = factorize(layer, kind, ranks)  # type: ignore[arg-type]
        layers[name] = _measure_layer(layer, new, kind, ranks, kept, inputs[name])
        slower, dense_ms, fact_ms = (layers[name][k] for k in ("slower_than_dense", "dense_ms_b64", "factorized_ms_b64"))
        if slower and cfg.skip_slower:
            skipped[name] = f"factorized {fact_ms:.3f} ms vs dense {dense_ms:.3f} ms at batch 64 (skip_slower)"
            layers[name]["kept_dense"] = True
            continue
        replace(model, name, new)
        broken = _forward_error(model, inputs_x)
        if broken:  # e.g. a parent module that reads `layer.weight` itself
            replace(model, name, layer)
            skipped[name] = f"the model fails with it factorized ({broken})"
            layers[name]["kept_dense"] = True
            continue
        plan[name] = {"kind": kind, "rank": layers[name]["rank"]}
    return {"plan": plan, "layers": layers, "skipped": skipped}


def lowrank_with_metrics(
    model: nn.Module,
    cfg: LowRankStage | Mapping[str, Any],
    data: DataBundle,
    *,
    train_defaults: TrainConfig | None = None,
    checkpoint_dir: Any = None,
    resume: bool = False,
    seed: int = 0,
    log: logging.Logger | None = None,
    where: str = "lowrank",
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """A factorized, fine-tuned copy of `model` and its metrics (`plan` is what its spec records)."""
    from frugalml.compress.distill.stage import DistillStage, distill_with_metrics

    cfg = as_config(cfg)
    log = log or logging.getLogger("frugalml")
    dense = model
    model = copy.deepcopy(model)
    before = sum(p.numel() for p in model.parameters())
    info = factorize_model(model, cfg, data, where)
    if not info["plan"]:
        log.warning("%s: no layer was factorized (%s)", where, "; ".join(f"{k}: {v}" for k, v in info["skipped"].items())
                    or "no eligible layer")
    slower = [n for n, v in info["layers"].items() if v["slower_than_dense"]]
    if slower:
        log.warning("%s: factorized layers slower than dense at batch 64: %s", where, ", ".join(slower))
    metrics: dict[str, Any] = {
        "rule": {"ratio": cfg.ratio, "energy": cfg.energy, "ranks": cfg.ranks, "conv": cfg.conv},
        **info, "slower_layers": slower, "params_before": before,
        "params_after": sum(p.numel() for p in model.parameters()),
        "val_accuracy_before_finetune": evaluate(model, data.x_val, data.y_val) if len(data.y_val) else None,
    }
    if cfg.distill is not None:
        dcfg = DistillStage(loss=cfg.distill, epochs=cfg.epochs, train=cfg.train)
        model, dm = distill_with_metrics(model, dense, dcfg, data, train_defaults=train_defaults,
                                         checkpoint_dir=checkpoint_dir, resume=resume, seed=seed, log=log,
                                         where=where, teacher_name="the unfactorized model", progress=progress)
        metrics["training"] = dm.pop("training")
        metrics["distillation"] = dm
        return model, metrics
    tcfg = merge_train(train_defaults, cfg.train, {"epochs": cfg.epochs}, where=f"{where}.train")
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": seed})
    if tcfg.epochs > 0:
        require_labels(data, f"{where}: fine-tuning without distill")
        trainer = Trainer(model, data, tcfg, checkpoint_dir=checkpoint_dir, log=log, progress=progress)
        t0 = time.perf_counter()
        result = trainer.fit(resume=resume and checkpoint_dir is not None)
        model = trainer.model
        metrics["training"] = {"epochs_run": result.epochs_run, "best_val_accuracy": result.best_val_accuracy,
                               "stopped_early": result.stopped_early,
                               "seconds_this_session": round(time.perf_counter() - t0, 2), "history": result.history}
    return model.eval(), metrics


def lowrank(model: nn.Module, cfg: LowRankStage | Mapping[str, Any], data: DataBundle, **kwargs: Any) -> nn.Module:
    """A factorized, fine-tuned copy of `model` (the input is untouched). Its `frugal_spec`, when the
    input had one, records the factorization, so `frugalml.save(m, dir)` stores a loadable artifact."""
    out, metrics = lowrank_with_metrics(model, cfg, data, **kwargs)
    spec = getattr(model, "frugal_spec", None)
    if spec is not None:
        out.frugal_spec = {**spec, SPEC_KEY: {**(spec.get(SPEC_KEY) or {}), **metrics["plan"]}}
    return out


@register_stage(LowRankStage)
def run_lowrank_stage(model: nn.Module | None, cfg: LowRankStage, ctx: StageContext) -> nn.Module:
    from frugalml.compress.ensemble import Ensemble

    where = f"stages.{cfg.name or 'lowrank'}"
    if model is None or getattr(model, "frugal_runtime", None) is not None or isinstance(model, Ensemble):
        raise ConfigError(f"{where}: lowrank needs a float model (not an ensemble) from an earlier stage; "
                          "factorize ensemble members before ensembling them")
    out, metrics = lowrank_with_metrics(model, cfg, ctx.data, train_defaults=ctx.train_defaults,
                                        checkpoint_dir=ctx.workdir / "checkpoint", resume=ctx.resume,
                                        seed=ctx.seed, log=ctx.log, where=where)
    spec = dict(ctx.model_spec)
    spec[SPEC_KEY] = {**(spec.get(SPEC_KEY) or {}), **metrics["plan"]}
    ctx.model_spec = spec
    out.frugal_spec = spec
    if "training" in metrics:
        ctx.extra_metrics["training"] = metrics.pop("training")
    ctx.extra_metrics["lowrank"] = metrics
    return out

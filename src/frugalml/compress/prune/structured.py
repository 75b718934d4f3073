"""Structured pruning with Torch-Pruning's dependency graph: whole channels, neurons, hidden units
and attention heads are removed, and every coupled layer (residual adds, concats, depthwise/group
convs, BN, flatten->Linear, recurrent matrices) shrinks with them. The result is a physically
smaller plain module.

Targets: a channel `ratio`, a `macs_budget` (fraction of MACs kept) or a measured
`latency_budget_ms` at batch 64; budgets are reached by pruning in small increments and checking
after each one. `steps` > 1 fine-tunes between steps. A group whose pruning breaks the model's
forward (a fixed reshape) is left unpruned and the pruning starts over without it; every prunable
layer left alone is listed, with the reason, in the metrics (`left_unpruned`) and the log.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from frugalml.compress.prune._calibrate import (
    activation_stats,
    calibration_batches,
    reconstruct,
    taylor_grads,
)
from frugalml.compress.prune._layers import count_macs, param_count, selected
from frugalml.compress.prune._tp_pruner import BlockedGroup, StructuredPruner, layer_shapes
from frugalml.compress.prune._unpruned import left_unpruned
from frugalml.compress.prune.api import PruneInputs, register_method
from frugalml.compress.prune.config import PruneConfig
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.train.evaluate import eval_mode

BUDGET_INCREMENTS = 40  # budgets: the channel ratio rises by max_layer_ratio / 40 per try


class StructuredPrune(PruneConfig):
    """Remove whole channels, neurons, hidden units and attention heads: a smaller, faster model.

    Torch-Pruning's dependency graph shrinks every coupled layer too. Give exactly one of `ratio`,
    `macs_budget`, `latency_budget_ms`."""

    method: Literal["structured"] = "structured"
    ratio: float | None = Field(
        None, ge=0, lt=1, description="fraction of channels (and attention heads) removed from each prunable layer"
    )
    importance: Literal["l1", "l2", "bn_scale", "taylor", "random", "activation"] = Field(
        "l1", description="how channels are ranked (concat branches are ranked each against itself); "
        "activation: what each channel adds to its consumers' outputs on calibration batches, "
        "||W[:, i]|| * ||x_i|| (Wanda-sp)"
    )
    macs_budget: float | None = Field(None, gt=0, lt=1, description="fraction of the original MACs to keep")
    latency_budget_ms: float | None = Field(None, gt=0, description="target median latency at batch 64")
    steps: int = Field(1, ge=1, le=50, description="iterative pruning steps, fine-tuning in between")
    per_layer: Literal["uniform", "sensitivity"] = "uniform"
    sensitivity_table: str | None = Field(
        None, description="sensitivity.json from `frugal sensitivity`; computed on the val split if absent"
    )
    max_layer_ratio: float = Field(0.9, gt=0, lt=1, description="no layer loses more than this fraction")
    round_to: int | None = Field(
        None, ge=2, description="keep channel counts multiples of this (e.g. 8: faster CPU kernels)"
    )
    taylor_batches: int = Field(4, ge=1, description="batches of loss.backward() for taylor importance")
    reconstruct: bool = Field(
        False, description="after pruning, before fine-tuning: refit each Linear layer that lost inputs (and "
        "kept its outputs) by least squares to the unpruned model's outputs on calibration batches"
    )
    calibration_batches: int = Field(
        32, ge=1, description="training batches of 32 that importance: activation and reconstruct read"
    )

    @model_validator(mode="after")
    def _one_target(self) -> StructuredPrune:
        budgets = [k for k in ("ratio", "macs_budget", "latency_budget_ms") if getattr(self, k) is not None]
        if len(budgets) != 1:
            raise ValueError("structured pruning needs exactly one of ratio, macs_budget, latency_budget_ms"
                             + (f" (got {', '.join(budgets)})" if budgets else ""))
        if self.per_layer == "sensitivity" and self.ratio is None:
            raise ValueError("per_layer: sensitivity needs `ratio` (budgets use uniform ratios)")
        return self

    @property
    def budgeted(self) -> bool:
        return self.ratio is None


@register_method(StructuredPrune)
def prune_structured(model: nn.Module, cfg: StructuredPrune, inputs: PruneInputs) -> tuple[nn.Module, dict]:
    ratio_by_layer = _sensitivity_ratios(model, cfg, inputs) if cfg.per_layer == "sensitivity" else None
    blocked: dict[str, str] = {}
    while True:  # at most one retry per prunable group
        attempt = copy.deepcopy(model)
        try:
            metrics = _prune_in_place(attempt, cfg, inputs, ratio_by_layer, blocked)
            break
        except BlockedGroup as b:
            if b.layer in blocked:
                raise UnsupportedError(f"prune: layer {b.layer!r} keeps breaking the model ({b.reason}); "
                                       "add it to prune.ignore") from None
            blocked[b.layer] = b.reason
            inputs.log.warning("prune: leaving %r unpruned and starting over: %s", b.layer, b.reason)
            inputs = replace(inputs, resume=False)  # checkpoints of the failed attempt do not fit
    if ratio_by_layer is not None:
        metrics["per_layer_ratios"] = {k: round(v, 4) for k, v in ratio_by_layer.items()}
    metrics["sparsity"] = round(1 - metrics["params_after"] / max(metrics["params_before"], 1), 6)
    metrics["sparsity_meaning"] = "fraction of parameters removed"
    return attempt, metrics


def _sensitivity_ratios(model: nn.Module, cfg: StructuredPrune, inputs: PruneInputs) -> dict[str, float]:
    from frugalml.compress.prune.sensitivity import allocate_ratios, read_table, sensitivity

    if cfg.sensitivity_table:
        table = read_table(cfg.sensitivity_table)
    else:
        out = inputs.workdir / "sensitivity" if inputs.workdir is not None else None
        table = sensitivity(model, inputs.data, method="structured", out_dir=out)
    allocated = allocate_ratios(table, cfg.ratio or 0.0, cfg.max_layer_ratio)
    return {k: v for k, v in allocated.items() if selected(k, cfg.targets, cfg.ignore)}


def latency_b64(model: nn.Module, data: Any, measure_config: Any) -> float:
    from frugalml.measure import MeasureConfig, measure_latency

    threads = getattr(measure_config, "threads", None)
    cfg = MeasureConfig(threads=threads, warmup_iters=3, warmup_seconds=0.2, iters=10, min_seconds=0.3)
    was_training = model.training
    model.eval()
    try:
        return float(measure_latency(model, data.sample_input(64), cfg)["median"])
    finally:
        model.train(was_training)


def _prune_in_place(
    model: nn.Module, cfg: StructuredPrune, inputs: PruneInputs, ratio_by_layer: dict[str, float] | None,
    blocked: dict[str, str],
) -> dict:
    """Prune `model` in place; returns the metrics (before/after sizes, per-layer widths, steps)."""
    data, log = inputs.data, inputs.log
    example1 = data.sample_input(1)
    before_shapes = layer_shapes(model)
    macs0, params0 = count_macs(model, example1), param_count(model)
    torch.manual_seed(inputs.seed)  # random importance
    pruner = StructuredPruner(
        model, data.sample_input(2), num_classes=data.num_classes, importance=cfg.importance,
        ratio=cfg.max_layer_ratio if cfg.budgeted else cfg.ratio,
        iterative_steps=BUDGET_INCREMENTS if cfg.budgeted else cfg.steps,
        max_layer_ratio=cfg.max_layer_ratio, ignore=cfg.ignore, targets=cfg.targets,
        ratio_by_layer=ratio_by_layer, round_to=cfg.round_to, blocked=blocked, check_ratio=not cfg.budgeted,
    )
    calib = calibration_batches(data, cfg.calibration_batches, inputs.seed) \
        if cfg.importance == "activation" or cfg.reconstruct else []
    before_step = None  # what an importance measures on data before each step
    if cfg.importance == "taylor":
        before_step = taylor_grads(model, data, cfg.taylor_batches, inputs.seed)
    elif cfg.importance == "activation":
        before_step = activation_stats(pruner.scorer, model, calib)
    lat0 = latency_b64(model, data, inputs.measure_config) if cfg.latency_budget_ms is not None else None
    epochs = cfg.finetune.epochs if cfg.finetune is not None else 0
    history = []
    for i in range(1, cfg.steps + 1):
        # refitted to the model as this step found it: after step 1, the fine-tuned one
        snapshot = copy.deepcopy(model) if cfg.reconstruct else None
        if cfg.budgeted:
            _prune_to_budget(model, cfg, inputs, pruner, before_step, macs0, lat0, i)
        else:
            pruner.step(before_step)
        refitted = reconstruct(model, snapshot, calib) if snapshot is not None else None
        del snapshot  # not kept through the fine-tuning
        if refitted is not None:
            log.info("prune step %d: refitted %d of %d layers by least squares (%s)", i,
                     sum(r["refitted"] for r in refitted.values()), len(refitted), _mse_summary(refitted))
        step_epochs = epochs // cfg.steps + (1 if i > cfg.steps - epochs % cfg.steps else 0)
        ft = None
        if step_epochs:
            checkpoint = f"finetune_step{i}" if cfg.steps > 1 else "finetune"
            ft = inputs.finetune(model, cfg.finetune, epochs=step_epochs, checkpoint=checkpoint)
        history.append({"step": i, "macs": count_macs(model, example1), "finetune": ft}
                       | ({"reconstructed": refitted} if refitted is not None else {}))
        log.info("prune step %d/%d: %.3g MACs (%.1f%% of original)", i, cfg.steps, history[-1]["macs"],
                 100 * history[-1]["macs"] / max(macs0, 1))

    with eval_mode(model), torch.no_grad():  # a check, not a training step: BatchNorm statistics stay put
        out = model(data.sample_input(2).to(next(model.parameters()).device))
    if tuple(out.shape) != (2, data.num_classes):
        raise UnsupportedError(f"structured pruning broke the model output: shape {tuple(out.shape)}")
    after_shapes = layer_shapes(model)
    macs1 = count_macs(model, example1)
    left = left_unpruned(pruner, before_shapes)
    for layer, reason in left.items():
        log.info("prune: %s left unpruned: %s", layer, reason)
    metrics = {
        "importance": cfg.importance,
        "macs_before": macs0,
        "macs_after": macs1,
        "mac_reduction": round(macs0 / max(macs1, 1), 3),
        "params_before": params0,
        "params_after": param_count(model),
        "pruned_channels": {k: [v, after_shapes.get(k, 0)] for k, v in before_shapes.items() if after_shapes.get(k) != v},
        "left_unpruned": left,
        "kept_layer": pruner.head_name,
        "steps": history,
    }
    if lat0 is not None:
        metrics["latency_b64_ms_before"] = round(lat0, 3)
        metrics["latency_b64_ms_after"] = round(latency_b64(model, data, inputs.measure_config), 3)
    return metrics


def _mse_summary(refitted: dict[str, dict]) -> str:
    if not refitted:
        return "no Linear layer lost inputs and kept its outputs"
    done = [r for r in refitted.values() if r["refitted"]]
    if not done:
        return "none improved on the calibration data"
    before = sum(r["mse_before"] for r in done) / len(done)
    after = sum(r["mse_after"] for r in done) / len(done)
    return f"mean MSE to the targets {before:.4g} -> {after:.4g}"


def _prune_to_budget(
    model: nn.Module, cfg: StructuredPrune, inputs: PruneInputs, pruner: StructuredPruner, before_step: Any,
    macs0: int, lat0: float | None, step: int,
) -> None:
    """Prune in increments until this step's share of the MACs/latency budget is met."""
    example1 = inputs.data.sample_input(1)
    if cfg.macs_budget is not None:
        goal = 1 - (1 - cfg.macs_budget) * step / cfg.steps

        def cost() -> float:
            return count_macs(model, example1) / macs0
    else:
        assert lat0 is not None and cfg.latency_budget_ms is not None
        goal = lat0 + (cfg.latency_budget_ms - lat0) * step / cfg.steps

        def cost() -> float:
            return latency_b64(model, inputs.data, inputs.measure_config)

    current = cost()
    while current > goal and not pruner.exhausted:
        pruner.step(before_step)
        current = cost()
    if current > goal:
        what, target = ("macs_budget", cfg.macs_budget) if cfg.macs_budget is not None else (
            "latency_budget_ms", cfg.latency_budget_ms)
        got = f"{current:.3f} of the MACs" if cfg.macs_budget is not None else f"{current:.2f} ms"
        raise ConfigError(
            f"prune.{what}={target} is out of reach: removing max_layer_ratio={cfg.max_layer_ratio} "
            f"of every prunable layer's channels still leaves {got}; raise the budget or max_layer_ratio"
        )

"""Structured pruning with Torch-Pruning's dependency graph: whole channels, neurons, hidden units
and attention heads are removed, and every coupled layer (residual adds, concats, depthwise/group
convs, BN, flatten->Linear, recurrent matrices) shrinks with them. The result is a physically
smaller plain module.

Targets: a channel `ratio`, a `macs_budget` (fraction of MACs kept) or a measured
`latency_budget_ms` at batch 64; budgets are reached by pruning in small increments and checking
after each one. `steps` > 1 fine-tunes between steps.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from frugalml.compress.prune._common import check_layer_names, classifier, count_macs, finetune, selected
from frugalml.compress.prune._tp_rnn import RNNHiddenPruner, supported
from frugalml.errors import ConfigError, UnsupportedError

ROOT_TYPES = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNN, nn.GRU, nn.LSTM]
_RNN_PRUNERS = {nn.RNN: RNNHiddenPruner(), nn.GRU: RNNHiddenPruner(), nn.LSTM: RNNHiddenPruner()}
BUDGET_INCREMENTS = 40  # budgets: the channel ratio rises by max_layer_ratio / 40 per try


def make_importance(name: str, model: nn.Module) -> tp.importance.Importance:
    if name == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError("prune.importance: bn_scale needs BatchNorm layers and this model has none; "
                          "allowed here: l1, l2, taylor, random")
    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn_scale": tp.importance.BNScaleImportance,
        "taylor": tp.importance.TaylorImportance,
        "random": tp.importance.RandomImportance,
    }[name]()


@contextmanager
def _quiet() -> Iterator[None]:
    # tp warns about unwrapped parameters (cls token, position embedding) it handles correctly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def layer_shapes(model: nn.Module) -> dict[str, int]:
    """Output width of every prunable layer (channels, features, hidden units, heads)."""
    out = {}
    for name, m in model.named_modules():
        for attr in ("out_channels", "out_features", "hidden_size", "num_heads"):
            if isinstance(getattr(m, attr, None), int):
                out[f"{name}.{attr}" if attr == "num_heads" else name] = getattr(m, attr)
                break
    return out


class StructuredPruner:
    """Wraps one tp.pruner.BasePruner over the model, with our defaults and checks."""

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        *,
        num_classes: int,
        importance: str,
        ratio: float,
        iterative_steps: int,
        max_layer_ratio: float,
        ignore: list[str],
        targets: list[str] | None,
        ratio_by_layer: dict[str, float] | None = None,
        round_to: int | None = None,
    ) -> None:
        from frugalml.models import pruning_hints, sync_after_pruning

        self.model, self.sync = model, sync_after_pruning
        check_layer_names(model, ignore, "ignore")
        check_layer_names(model, targets, "targets")
        check_layer_names(model, list(ratio_by_layer or {}), "sensitivity_table")
        hints = pruning_hints(model)
        head_name, head = classifier(model, num_classes)
        ignored: list[nn.Module] = [head]
        self.notes: list[str] = []
        for m in hints["ignored_layers"]:
            if isinstance(m, nn.RNNBase) and supported(m):
                continue  # our RNNHiddenPruner handles it
            ignored.append(m)
            if isinstance(m, nn.RNNBase):
                self.notes.append(f"{type(m).__name__} hidden units kept (bidirectional/projected "
                                  "recurrent layers are not prunable); the layers around it are pruned")
        names = {m: n for n, m in model.named_modules()}
        ignored += [m for m in model.modules() if isinstance(m, tuple(ROOT_TYPES))
                    and not selected(names[m], targets, ignore)]
        self.num_heads = dict(hints["num_heads"])
        self.initial_heads = dict(self.num_heads)
        self.ratio_by_layer = ratio_by_layer or {}
        by_name = dict(model.named_modules())
        scorer = make_importance(importance, model)
        was_training = model.training
        try:
            with _quiet():
                self.pruner = tp.pruner.BasePruner(
                    model, example,
                    importance=scorer,
                    pruning_ratio=ratio,
                    pruning_ratio_dict={by_name[n]: r for n, r in self.ratio_by_layer.items()} or None,
                    max_pruning_ratio=max_layer_ratio,
                    iterative_steps=iterative_steps,
                    round_to=round_to,
                    ignored_layers=ignored,
                    num_heads=self.num_heads,
                    prune_num_heads=bool(self.num_heads),
                    prune_head_dims=False,
                    customized_pruners=_RNN_PRUNERS,
                    in_channel_groups={},  # tp's defaults are shared mutable dicts
                    out_channel_groups={},
                    root_module_types=ROOT_TYPES,
                )  # fmt: skip
        except Exception as e:  # tp raises bare errors from deep inside its tracer
            raise UnsupportedError(
                f"Torch-Pruning cannot trace this model ({type(e).__name__}: {e}); "
                "list the offending layers in prune.ignore or use method: unstructured"
            ) from None
        finally:
            model.train(was_training)
        self.head_name = head_name
        self.total_steps = iterative_steps
        with _quiet():
            self._check_groups_map()
            self._check_not_emptied(ratio, max_layer_ratio)

    def _check_groups_map(self) -> None:
        """Score every group once: a group whose channel indices tp mis-maps (e.g. attention split by
        indexing instead of unbind) fails here, before anything is cut, and is named."""
        dg, probe = self.pruner.DG, tp.importance.MagnitudeImportance(p=1)
        bad: list[str] = []
        error = ""
        for group in dg.get_all_groups(ignored_layers=self.pruner.ignored_layers, root_module_types=ROOT_TYPES):
            try:
                probe(group)
            except (IndexError, RuntimeError, ValueError, AssertionError) as e:
                bad.append(dg._module2name.get(group[0].dep.target.module, "?"))
                error = error or f"{type(e).__name__}: {e}"
        if bad:
            raise UnsupportedError(
                f"Torch-Pruning cannot map the channels of layer(s) {', '.join(repr(b) for b in bad)} "
                f"({error}); add them to prune.ignore or use method: unstructured"
            )

    def _check_not_emptied(self, ratio: float, max_layer_ratio: float) -> None:
        """A layer must keep at least one channel; say which one would not."""
        dg = self.pruner.DG
        for group in dg.get_all_groups(ignored_layers=self.pruner.ignored_layers, root_module_types=ROOT_TYPES):
            root = group[0].dep.target.module
            channels = dg.get_out_channels(root) // max(1, self.pruner._get_channel_groups(group))
            name = dg._module2name.get(root, type(root).__name__)
            r = min(self.ratio_by_layer.get(name, ratio), max_layer_ratio)
            kept = int(channels * (1 - r))
            if self.pruner.round_to:
                kept -= kept % self.pruner.round_to
            if channels and kept < 1:
                rounding = f" (rounded down to a multiple of round_to={self.pruner.round_to})" if self.pruner.round_to else ""
                raise ConfigError(
                    f"prune: ratio {r} would remove every one of the {channels} channels of layer {name!r}"
                    f"{rounding}; lower the ratio/max_layer_ratio or add {name!r} to prune.ignore"
                )

    @property
    def exhausted(self) -> bool:
        return self.pruner.current_step >= self.total_steps

    def step(self, before_step: Callable[[], None] | None = None) -> None:
        """One tp step. Heads get their own per-layer target first: tp would apply the head ratio
        to the heads left after earlier steps (compounding), and it ceil()s ratio * heads."""
        if self.exhausted:
            return
        nxt = self.pruner.current_step + 1
        for qkv, h0 in self.initial_heads.items():
            ratio = self.pruner.get_target_pruning_ratio(qkv, step=nxt)
            now = self.pruner.num_heads[qkv]
            remove = max(0, now - max(1, math.ceil(h0 * (1 - ratio) - 1e-9)))
            self.pruner.head_pruning_ratio_dict[qkv] = [(remove - 0.5) / now if remove else 0.0] * (self.total_steps + 1)
        if before_step is not None:
            before_step()
        was_training = self.model.training
        self.model.eval()
        try:
            with _quiet():
                self.pruner.step()
        except (IndexError, RuntimeError, ValueError, AssertionError) as e:
            raise UnsupportedError(f"Torch-Pruning failed to prune this model ({type(e).__name__}: {e}); "
                                   "list the offending layers in prune.ignore or use method: unstructured") from None
        finally:
            self.model.train(was_training)
        self.sync(self.model, self.pruner.num_heads)
        self.model.zero_grad(set_to_none=True)


def taylor_grads(model: nn.Module, data: Any, batches: int, seed: int) -> Callable[[], None]:
    """First-order Taylor importance needs dL/dw: accumulate a few training batches (eval mode, so
    BN statistics are untouched)."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()
        try:
            loader = data.loader("train", batch_size=64, shuffle=True, seed=seed)
            for i, (x, y) in enumerate(loader):
                if i >= batches:
                    break
                F.cross_entropy(model(x), y).backward()
        finally:
            model.train(was_training)

    return run


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


def prune_structured(
    model: nn.Module,
    cfg: Any,
    data: Any,
    *,
    train_defaults: Any = None,
    measure_config: Any = None,
    ratio_by_layer: dict[str, float] | None = None,
    workdir: Path | None = None,
    resume: bool = False,
    seed: int = 0,
    log: logging.Logger | None = None,
    teacher: nn.Module | None = None,
) -> dict:
    """Prune `model` in place; returns the stage metrics (before/after sizes, per-layer widths).
    `teacher` (the unpruned model) is distilled from during fine-tuning when finetune.distill > 0."""
    log = log or logging.getLogger("frugalml")
    example1 = data.sample_input(1)
    before_shapes = layer_shapes(model)
    macs0, params0 = count_macs(model, example1), sum(p.numel() for p in model.parameters())
    budget = cfg.macs_budget is not None or cfg.latency_budget_ms is not None
    increments = BUDGET_INCREMENTS if budget else cfg.steps
    torch.manual_seed(seed)  # random importance
    pruner = StructuredPruner(
        model, data.sample_input(2), num_classes=data.num_classes, importance=cfg.importance,
        ratio=cfg.max_layer_ratio if budget else cfg.ratio, iterative_steps=increments,
        max_layer_ratio=cfg.max_layer_ratio, ignore=cfg.ignore, targets=cfg.targets,
        ratio_by_layer=ratio_by_layer, round_to=cfg.round_to,
    )  # fmt: skip
    grads = taylor_grads(model, data, cfg.taylor_batches, seed) if cfg.importance == "taylor" else None
    lat0 = latency_b64(model, data, measure_config) if cfg.latency_budget_ms is not None else None

    def cost() -> float:  # the budgeted quantity, as a fraction/ms to compare with the target
        if cfg.macs_budget is not None:
            return count_macs(model, example1) / macs0
        return latency_b64(model, data, measure_config)

    epochs = cfg.finetune.epochs if cfg.finetune is not None else 0
    history = []
    for i in range(1, cfg.steps + 1):
        if budget:
            goal = (1 - (1 - cfg.macs_budget) * i / cfg.steps if cfg.macs_budget is not None
                    else lat0 + (cfg.latency_budget_ms - lat0) * i / cfg.steps)  # fmt: skip
            current = cost()
            while current > goal and not pruner.exhausted:
                pruner.step(grads)
                current = cost()
            if current > goal:
                what = "macs_budget" if cfg.macs_budget is not None else "latency_budget_ms"
                target = cfg.macs_budget if cfg.macs_budget is not None else cfg.latency_budget_ms
                got = f"{current:.3f} of the MACs" if cfg.macs_budget is not None else f"{current:.2f} ms"
                raise ConfigError(
                    f"prune.{what}={target} is out of reach: removing max_layer_ratio={cfg.max_layer_ratio} "
                    f"of every prunable layer's channels still leaves {got}; raise the budget or max_layer_ratio"
                )
        else:
            pruner.step(grads)
        step_epochs = epochs // cfg.steps + (1 if i > cfg.steps - epochs % cfg.steps else 0)
        ft = None
        if cfg.finetune is not None and step_epochs:
            ckpt = workdir / f"finetune_step{i}" if workdir is not None and cfg.steps > 1 else (
                workdir / "finetune" if workdir is not None else None)  # fmt: skip
            ft = finetune(model, data, cfg.finetune, train_defaults, epochs=step_epochs,
                          checkpoint_dir=ckpt, resume=resume, log=log, teacher=teacher)  # fmt: skip
        history.append({"step": i, "macs": count_macs(model, example1), "finetune": ft})
        log.info("prune step %d/%d: %.3g MACs (%.1f%% of original)", i, cfg.steps, history[-1]["macs"],
                 100 * history[-1]["macs"] / max(macs0, 1))

    out = model(data.sample_input(2).to(next(model.parameters()).device))
    if tuple(out.shape) != (2, data.num_classes):
        raise UnsupportedError(f"structured pruning broke the model output: shape {tuple(out.shape)}")
    after_shapes = layer_shapes(model)
    changed = {k: [v, after_shapes.get(k, 0)] for k, v in before_shapes.items() if after_shapes.get(k) != v}
    macs1 = count_macs(model, example1)
    metrics = {
        "method": "structured",
        "importance": cfg.importance,
        "macs_before": macs0,
        "macs_after": macs1,
        "mac_reduction": round(macs0 / max(macs1, 1), 3),
        "params_before": params0,
        "params_after": sum(p.numel() for p in model.parameters()),
        "pruned_channels": changed,
        "kept_layer": pruner.head_name,
        "steps": history,
    }
    if lat0 is not None:
        metrics["latency_b64_ms_before"] = round(lat0, 3)
        metrics["latency_b64_ms_after"] = round(latency_b64(model, data, measure_config), 3)
    if pruner.notes:
        metrics["notes"] = pruner.notes
    return metrics

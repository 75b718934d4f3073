"""The `average` stage: one model whose weights are an average of several — more accuracy for the
same inference cost. `method:` picks the variant (one config class each):

- `swa`: stochastic weight averaging over the last epochs of a fine-tuning run;
- `ema`: exponential moving average of the weights over the fine-tuning steps;
- `soup`: a uniform or greedy "model soup" of models fine-tuned from the same parent.

Averaged weights need their own BatchNorm statistics (the running means of the individual models do
not describe the averaged one), so every variant recomputes them with one pass over training data.
SWA and EMA are a Trainer callback on the one training loop (checkpointed with it).

    from frugalml.compress.average import SWA, Soup, average
    swa = average(model, SWA(epochs=10, last_epochs=5), data)
    soup = average([ft1, ft2, ft3], Soup(selection="greedy"), data)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from frugalml.compress.distill.refs import require_float, resolve
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError
from frugalml.stages import StageConfig, StageContext, add_variant, register_stage
from frugalml.train import TrainConfig, Trainer, TrainOverrides, merge_train
from frugalml.train.evaluate import evaluate


class AverageStage(StageConfig):
    """Average weights (`method`: swa, ema or soup); BatchNorm statistics are recomputed after."""

    kind: Literal["average"] = "average"
    method: str
    bn_batches: int | None = Field(None, ge=1, description="training batches of 256 for the BatchNorm "
                                   "recomputation; default the whole training split")


class _Finetune(AverageStage):
    epochs: int | None = Field(None, ge=1, description="fine-tuning epochs; default the train section's")
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]


class SWA(_Finetune):
    """Stochastic weight averaging (Izmailov et al. 2018): fine-tune the parent and average its
    weights at the end of each of the last `last_epochs` epochs. A constant (or high, slowly
    decaying) learning rate keeps those snapshots apart: `train: {schedule: constant, lr: ...}`."""

    method: Literal["swa"] = "swa"
    last_epochs: int = Field(5, ge=1, description="epochs, counted from the end, whose weights are averaged")


class EMA(_Finetune):
    """Exponential moving average of the weights, updated after every optimizer step while the
    parent is fine-tuned (Polyak averaging): `avg = decay * avg + (1 - decay) * weights`."""

    method: Literal["ema"] = "ema"
    decay: float = Field(0.999, gt=0, lt=1)


class Soup(AverageStage):
    """Model soup (Wortsman et al. 2022): average the weights of models fine-tuned from the same
    parent (same architecture and shapes). `uniform` averages them all; `greedy` adds them best
    first (by validation accuracy) and keeps each only if the soup's validation accuracy does not drop."""

    method: Literal["soup"] = "soup"
    ingredients: list[str] = Field(description="earlier stage names or artifact folders")
    selection: Literal["uniform", "greedy"] = "uniform"

    @field_validator("ingredients")
    @classmethod
    def _at_least_two(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"a soup needs at least 2 ingredients, got {len(v)} ({', '.join(v) or 'none'})")
        return v

    def starts_fresh(self) -> bool:
        return True


# --- the pieces -------------------------------------------------------------------------------------------


def recompute_bn(model: nn.Module, data: DataBundle | None, batch_size: int = 256, max_batches: int | None = None,
                 *, x: torch.Tensor | None = None, skip: Collection[nn.Module] = ()) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on the
    training split (or on `x`) in train mode without gradients; BatchNorms in `skip` keep theirs.
    Returns how many BatchNorm layers were recomputed."""
    skipped = {id(m) for m in skip}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
           and id(m) not in skipped]
    if not bns:
        return 0
    if x is None:
        if data is None:
            raise ValueError("recompute_bn needs data or x")
        x = data.x_train
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average: every batch counts the same
    was_training = model.training
    model.train()
    for m in skip:
        m.eval()  # normalises with its kept statistics and leaves them alone
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, start in enumerate(range(0, len(x), batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            model(x[start : start + batch_size].to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(bns)


def average_weights(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of `models[0]` whose floating-point tensors are the mean of all models' (others from the first)."""
    out = copy.deepcopy(models[0])
    states = [m.state_dict() for m in models]
    avg = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
           for k, v in states[0].items()}
    out.load_state_dict(avg)
    return out


class WeightAverager:
    """Trainer callback: SWA (equal weights, at the end of each epoch from `start_epoch`) or EMA
    (after every optimizer step) of the model's parameters. Checkpointed with the run."""

    def __init__(self, mode: Literal["swa", "ema"], start_epoch: int = 1, decay: float = 0.999) -> None:
        self.mode, self.start_epoch, self.decay = mode, start_epoch, decay
        self.avg: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def _update(self, model: nn.Module, weight: float) -> None:
        for name, p in model.named_parameters():
            a = self.avg.get(name)
            if a is None or self.count == 0:
                self.avg[name] = p.detach().float().clone()
            else:
                a.lerp_(p.detach().float(), weight)
        self.count += 1

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        if self.mode == "ema":
            self._update(trainer.model, 1.0 - self.decay)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        if self.mode == "swa" and epoch >= self.start_epoch:
            self._update(trainer.model, 1.0 / (self.count + 1))

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.avg[name].to(p.dtype))

    def state_dict(self) -> dict:
        return {"count": self.count, **{f"avg.{k}": v for k, v in self.avg.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))
        self.avg = {k[4:]: v.clone() for k, v in state.items() if k.startswith("avg.")}


def _val(model: nn.Module, data: DataBundle) -> float | None:
    return evaluate(model, data.x_val, data.y_val) if len(data.y_val) else None


def average_training(model: nn.Module, cfg: SWA | EMA, data: DataBundle, *, train_defaults: TrainConfig | None = None,
                     checkpoint_dir: Any = None, resume: bool = False, seed: int = 0,
                     log: logging.Logger | None = None, where: str = "average") -> tuple[nn.Module, dict]:
    """Fine-tune `model` in place with a WeightAverager; returns (averaged model, metrics)."""
    tcfg = merge_train(train_defaults, cfg.train, {"epochs": cfg.epochs}, where=f"{where}.train")
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": seed})
    if tcfg.epochs < 1:
        raise ConfigError(f"{where}.epochs: {cfg.method} averages weights seen while fine-tuning; needs epochs >= 1")
    start = 1
    if isinstance(cfg, SWA):
        if cfg.last_epochs > tcfg.epochs:
            raise ConfigError(f"{where}.last_epochs: {cfg.last_epochs} is more than the {tcfg.epochs} fine-tuning epochs")
        start = tcfg.epochs - cfg.last_epochs + 1
    averager = WeightAverager(cfg.method, start, getattr(cfg, "decay", 0.999))  # type: ignore[arg-type]
    trainer = Trainer(model, data, tcfg, callbacks=[averager], checkpoint_dir=checkpoint_dir, log=log)
    t0 = time.perf_counter()
    result = trainer.fit(resume=resume and checkpoint_dir is not None)
    model = trainer.model
    metrics: dict[str, Any] = {"method": cfg.method, "val_accuracy_final_weights": _val(model, data)}
    if averager.count == 0:  # stopped early before the averaging window
        (log or logging.getLogger("frugalml")).warning("%s: no weights were averaged (training stopped at epoch %d)",
                                                       where, result.epochs_run)
    else:
        averager.apply(model)
    metrics.update({
        "averaged": averager.count,
        "averaged_unit": "epochs" if cfg.method == "swa" else "steps",
        "bn_layers_recomputed": recompute_bn(model, data, max_batches=cfg.bn_batches),
        "val_accuracy_averaged": _val(model, data),
        "training": {"epochs_run": result.epochs_run, "best_val_accuracy": result.best_val_accuracy,
                     "stopped_early": result.stopped_early, "seconds_this_session": round(time.perf_counter() - t0, 2),
                     "history": result.history},
    })
    return model.eval(), metrics


def soup(models: Sequence[nn.Module], cfg: Soup, data: DataBundle, names: Sequence[str] | None = None,
         where: str = "average") -> tuple[nn.Module, dict]:
    """A uniform or greedy soup of `models` (same architecture and shapes), BatchNorm recomputed."""
    names = list(names or [str(i) for i in range(len(models))])
    ref = {k: v.shape for k, v in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], start=1):
        other = {k: v.shape for k, v in m.state_dict().items()}
        if other != ref:
            diff = sorted(set(ref) ^ set(other)) or [k for k in ref if ref[k] != other[k]]
            raise ConfigError(f"{where}.ingredients.{i}: {names[i]!r} differs from {names[0]!r} in {diff[0]!r}; a soup "
                              "averages models fine-tuned from the same parent")
    if cfg.selection == "greedy" and not len(data.y_val):
        raise ConfigError(f"{where}.selection: greedy soup picks ingredients by validation accuracy; the data has no "
                          "validation split")
    val = {n: _val(m, data) for n, m in zip(names, models)}

    def cook(chosen: list[int]) -> nn.Module:
        out = average_weights([models[i] for i in chosen])
        recompute_bn(out, data, max_batches=cfg.bn_batches)
        return out.eval()

    order = list(range(len(models)))
    if cfg.selection == "greedy":
        order.sort(key=lambda i: -(val[names[i]] or 0.0))
        kept, best, result = [order[0]], val[names[order[0]]] or 0.0, models[order[0]]
        for i in order[1:]:
            candidate = cook(kept + [i])
            acc = _val(candidate, data) or 0.0
            if acc >= best:
                kept, best, result = kept + [i], acc, candidate
        result = result if len(kept) > 1 else copy.deepcopy(result).eval()
    else:
        kept, result = order, cook(order)
    return result, {"method": "soup", "selection": cfg.selection, "ingredients_val_accuracy": val,
                    "kept": [names[i] for i in kept], "val_accuracy_averaged": _val(result, data)}


def _as_config(cfg: AverageStage | Mapping[str, Any]) -> AverageStage:
    if isinstance(cfg, AverageStage):
        return cfg
    variants = {"swa": SWA, "ema": EMA, "soup": Soup}
    method = cfg.get("method", "swa") if isinstance(cfg, Mapping) else None
    if method not in variants:
        raise ConfigError(f"average.method: unknown method {method!r}; allowed: {', '.join(variants)}")
    return variants[method].checked("average", dict(cfg))


def average(model: nn.Module | Sequence[nn.Module], cfg: AverageStage | Mapping[str, Any], data: DataBundle,
            **kwargs: Any) -> nn.Module:
    """SWA/EMA: a fine-tuned, weight-averaged copy of `model`; Soup: the soup of the models given.
    Keyword arguments (SWA/EMA): train_defaults, checkpoint_dir, resume, seed, log."""
    cfg = _as_config(cfg)
    if isinstance(cfg, Soup):
        models = list(model) if not isinstance(model, nn.Module) else [model]
        if len(models) < 2:
            raise ConfigError(f"average: a soup needs at least 2 models, got {len(models)}")
        return soup(models, cfg, data)[0]
    if not isinstance(model, nn.Module):
        raise ConfigError(f"average: {cfg.method} fine-tunes one model; got {type(model).__name__}")
    return average_training(copy.deepcopy(model), cfg, data, **kwargs)[0]  # type: ignore[arg-type]


@register_stage(AverageStage, variant_key="method", default_variant="swa")
def run_average_stage(model: nn.Module | None, cfg: AverageStage, ctx: StageContext) -> nn.Module:
    where = f"stages.{cfg.name or 'average'}"
    if isinstance(cfg, Soup):
        refs = [resolve(r, ctx, f"{where}.ingredients.{i}") for i, r in enumerate(cfg.ingredients)]
        for i, r in enumerate(refs):
            require_float(r, f"{where}.ingredients.{i}", "soup")
        out, metrics = soup([copy.deepcopy(r.model) for r in refs], cfg, ctx.data, [r.name for r in refs], where)
        ctx.model_spec = dict(refs[0].spec or {})
        out.frugal_spec = ctx.model_spec
    else:
        from frugalml.compress.ensemble import Ensemble

        if model is None or getattr(model, "frugal_runtime", None) is not None or isinstance(model, Ensemble):
            raise ConfigError(f"{where}: {cfg.method} needs a float model (not an ensemble) from an earlier stage "
                              "to fine-tune")
        out, metrics = average_training(model, cfg, ctx.data, train_defaults=ctx.train_defaults,  # type: ignore[arg-type]
                                        checkpoint_dir=ctx.workdir / "checkpoint", resume=ctx.resume,
                                        seed=ctx.seed, log=ctx.log, where=where)
        ctx.extra_metrics["training"] = metrics.pop("training")
    ctx.extra_metrics["averaging"] = metrics
    return out


for _variant in (SWA, EMA, Soup):
    add_variant(_variant)

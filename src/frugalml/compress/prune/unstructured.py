"""Unstructured magnitude (L1) pruning: one-shot or gradual (AGP), global or per layer.

Masks live in torch.nn.utils.prune reparametrizations (`weight_orig` * `weight_mask`) while the
model fine-tunes, so pruned weights stay zero under the optimizer; `bake()` removes them with
`prune.remove`, leaving a plain module whose zeros are real zeros.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator
from torch.nn.utils import prune as torch_prune

from frugalml.compress.prune._layers import masked_weights, zero_metrics
from frugalml.compress.prune.api import PruneInputs, register_method
from frugalml.compress.prune.config import MaskPruneConfig

_ORDER = "_frugal_param_order"


class UnstructuredPrune(MaskPruneConfig):
    """Zero the smallest-magnitude weights (the default method of `kind: prune`).

    Conv, linear, recurrent and attention weights; shapes are unchanged and the artifact stores the
    zeros compactly. One-shot or gradual (AGP) during fine-tuning, one threshold or one per layer."""

    method: Literal["unstructured"] = "unstructured"
    ratio: float = Field(ge=0, lt=1, description="fraction of the targeted weights set to zero, e.g. 0.9")
    scope: Literal["global", "layer", "lamp"] = Field(
        "global",
        description="global: one magnitude threshold; layer: the same ratio in every layer; lamp: one "
        "threshold on LAMP scores (Lee et al. 2021), which compare layers whose weight scales differ",
    )
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="gradual: AGP cubic schedule (Zhu & Gupta 2017) over the fine-tuning epochs"
    )

    @model_validator(mode="after")
    def _gradual_needs_training(self) -> UnstructuredPrune:
        if self.schedule == "gradual" and (self.finetune is None or self.finetune.epochs < 1):
            raise ValueError("schedule: gradual prunes during fine-tuning: set finetune.epochs >= 1")
        return self


@register_method(UnstructuredPrune)
def prune_unstructured(model: nn.Module, cfg: UnstructuredPrune, inputs: PruneInputs) -> tuple[nn.Module, dict]:
    masks = MagnitudeMasks(masked_weights(model, cfg.targets, cfg.ignore), cfg.scope)
    if cfg.schedule == "gradual":
        ft = inputs.finetune(model, cfg.finetune, callbacks=[AGPCallback(masks, cfg.ratio)], every_epoch=True)
    else:
        masks.set_sparsity(cfg.ratio)
        ft = inputs.finetune(model, cfg.finetune)
    masks.set_sparsity(cfg.ratio)  # exact final target (a no-op unless training was cut short)
    masks.bake()
    metrics = {"scope": cfg.scope, "schedule": cfg.schedule, "target": cfg.ratio}
    return model, {**metrics, **zero_metrics(model, masks.params), "finetune": ft}


class MagnitudeMasks:
    """Owns the masks of the targeted weights; `set_sparsity` recomputes them from magnitudes."""

    def __init__(self, params: list[tuple[str, nn.Module, str]], scope: str = "global") -> None:
        self.params = params
        self.scope = scope
        for _, mod, pname in params:
            if not hasattr(mod, pname + "_mask"):
                remember_order(mod)
                torch_prune.identity(mod, pname)

    def _effective(self, mod: nn.Module, pname: str) -> torch.Tensor:
        return getattr(mod, pname + "_orig").detach() * getattr(mod, pname + "_mask")

    @torch.no_grad()
    def set_sparsity(self, sparsity: float) -> None:
        """Zero exactly round(sparsity * n) weights with the smallest |w| (already-zero ones first,
        so masks only grow as the schedule advances)."""
        scores = [self._effective(mod, p).abs().flatten() for _, mod, p in self.params]
        if self.scope == "lamp":
            scores = [lamp_scores(s) for s in scores]
        if self.scope in ("global", "lamp"):
            flat = torch.cat(scores)
            keep = torch.ones_like(flat, dtype=torch.bool)
            k = round(sparsity * flat.numel())
            if k:
                keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
            masks = list(torch.split(keep, [s.numel() for s in scores]))
        else:
            masks = []
            for s in scores:
                keep = torch.ones_like(s, dtype=torch.bool)
                k = round(sparsity * s.numel())
                if k:
                    keep[torch.topk(s, k, largest=False, sorted=False).indices] = False
                masks.append(keep)
        for (_, mod, pname), keep in zip(self.params, masks):
            buf = getattr(mod, pname + "_mask")
            buf.copy_(keep.view_as(buf).to(buf.dtype))

    def sparsity(self) -> float:
        total = sum(getattr(m, p + "_mask").numel() for _, m, p in self.params)
        zeros = sum(int((getattr(m, p + "_mask") == 0).sum()) for _, m, p in self.params)
        return zeros / max(total, 1)

    def bake(self) -> None:
        bake_masks(self.params)


def bake_masks(params: list[tuple[str, nn.Module, str]]) -> None:
    """Multiply masks into the weights and drop the reparametrization (no hooks remain)."""
    for _, mod, pname in params:
        if hasattr(mod, pname + "_mask"):
            torch_prune.remove(mod, pname)
        with torch.no_grad():  # masked negative weights become -0.0: store them as plain zeros
            w = getattr(mod, pname)
            w.masked_fill_(w == 0, 0.0)
    for _, mod, _ in params:
        order = mod.__dict__.pop(_ORDER, None)
        if order is not None:  # prune re-registers weights last; restore the state_dict order
            ps = mod._parameters
            mod._parameters = {n: ps[n] for n in dict.fromkeys([n for n in order if n in ps] + list(ps))}
        if isinstance(mod, nn.RNNBase) and hasattr(mod, "_init_flat_weights"):
            mod._init_flat_weights()  # the fused kernel must see the new Parameter objects


def remember_order(mod: nn.Module) -> None:
    """Call before the first torch.nn.utils.prune call on `mod` (see bake_masks)."""
    mod.__dict__.setdefault(_ORDER, list(mod._parameters))


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al., ICLR 2021, "Layer-adaptive sparsity for the magnitude-based pruning"): a
    weight's square over the sum of the squares of every weight of its layer at least as large, so
    each layer's largest weight scores 1 and the scores do not change when a layer is rescaled.

    Why it matters here: a convolution followed by BatchNorm computes the same function at any weight
    scale, and weight decay shrinks such layers unevenly, so one global magnitude threshold compares
    numbers that mean nothing to each other. On the Fashion-MNIST baseline CNN, 90% global magnitude
    pruning leaves its largest convolution 1.3% of its weights; with BatchNorm statistics re-estimated
    and no fine-tuning the model keeps 42% val accuracy, against 70% with LAMP's allocation
    (BENCHMARKS.md, issue #9). Ties share a rank by position; zeros score 0 (they stay pruned)."""
    flat = weight.detach().flatten().double() ** 2
    ordered, order = flat.sort()
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the squares from this rank up
    scores = torch.empty_like(flat)
    scores[order] = ordered / tail.clamp_min(1e-300)  # a zero tail means zero weights: 0 / tiny = 0
    return scores.view_as(weight).to(weight.dtype)


def agp_sparsity(final: float, progress: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - t/T)^3, t/T clipped to [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** 3


class AGPCallback:
    """Trainer callback: raise sparsity along the AGP curve, updating masks every `every` steps.

    The ramp ends at `end_fraction` of the run so the last part fine-tunes at the final sparsity.
    Progress is read from `trainer.step`, so a resumed run continues on the same curve.
    """

    def __init__(self, masks: MagnitudeMasks, final: float, end_fraction: float = 0.75, updates: int = 40):
        self.masks, self.final, self.end_fraction, self.updates = masks, final, end_fraction, updates
        self.total = self.ramp = self.every = 1

    def on_train_start(self, trainer) -> None:
        self.total = max(1, trainer.cfg.epochs * trainer.steps_per_epoch)
        ramp = max(1, int(self.total * self.end_fraction))
        self.every = max(1, ramp // self.updates)
        self.ramp = ramp
        self.masks.set_sparsity(agp_sparsity(self.final, trainer.step / ramp))

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        if step <= self.ramp and (step % self.every == 0 or step == self.ramp):
            self.masks.set_sparsity(agp_sparsity(self.final, step / self.ramp))

    def on_train_end(self, trainer) -> None:
        self.masks.set_sparsity(self.final)

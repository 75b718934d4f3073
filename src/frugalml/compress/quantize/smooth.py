"""SmoothQuant (Xiao et al., 2023, arXiv:2211.10438): move activation outliers into the weights before
int8 with per-tensor activation scales (ONNX Runtime's dynamic and static modes).

A transformer's hidden states have a few channels 10-30× larger than the rest (all-MiniLM-L6-v2: an
FFN input channel reaches 28.5 where the median channel's maximum is 2.1). One int8 scale per tensor is
set by them, and the other channels keep a handful of levels. SmoothQuant divides input channel j of a
Linear by

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

and multiplies column j of its weight by s_j: the same function in float, with flatter activations;
the outliers now live in the weights, whose scales are per output channel. `alpha` sets how much moves
(0: nothing; the paper uses 0.5 for OPT/BLOOM; all-MiniLM-L6-v2 measured best at 0.8-0.9, BENCHMARKS.md).

The division is a `Smoothed` wrapper (an elementwise Mul in front of the Linear in the exported graph),
because the tensor a transformer's Linear reads is also its residual branch: folding 1/s into the
LayerNorm before it would change the residual too. Linears that read the same tensor (query, key and
value) share one factor, computed over their stacked weights, and one Mul serves them all.

torchao has SmoothQuant for its own quantized tensor subclasses (torchao.prototype.smoothquant); those do
not export to ONNX, so the rewrite is here, with the paper's factor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

EPS = 1e-5


class Smoothed(nn.Module):
    """`linear(x * inv_scale)`: a Linear whose weight columns were multiplied by 1 / inv_scale."""

    def __init__(self, linear: nn.Linear, inv_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def _observe(model: nn.Module, batches: list[Any]) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
    """Groups of Linears that read the same tensor (from the first batch) and, per group, the absolute
    maximum of each input channel over all batches. A Linear called more than once per forward (shared
    weights, a loop) is left out: one factor cannot serve several different inputs' groups."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n}
    seen: dict[int, list[str]] = {}
    held: list[torch.Tensor] = []  # keeps the first batch's inputs alive so their ids stay unique
    first: dict[str, str] = {}  # linear -> the group leader (the first linear that read its input)
    amax: dict[str, torch.Tensor] = {}
    state = {"first_batch": True}
    calls_again: set[str] = set()

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            x = inputs[0]
            if state["first_batch"]:
                if name in first:
                    calls_again.add(name)
                group = seen.setdefault(id(x), [])
                group.append(name)
                first[name] = group[0]
                held.append(x)
            if first.get(name) != name:
                return  # the same input as its leader: counted once
            a = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float()
            amax[name] = torch.maximum(amax[name], a) if name in amax else a

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    try:
        with torch.inference_mode():
            for i, batch in enumerate(batches):
                model(batch)
                if i == 0:
                    state["first_batch"] = False
                    held.clear()
    finally:
        for h in handles:
            h.remove()
    groups = [g for g in seen.values() if not calls_again.intersection(g)]
    return groups, amax


@torch.no_grad()
def smooth_linears(model: nn.Module, batches: list[Any], alpha: float) -> dict[str, Any]:
    """Apply SmoothQuant to every Linear that `model` runs on `batches` (in place; the model computes the
    same function in float). Returns a report: groups, Linears, and the largest ratio of a channel's
    maximum to the median channel's, before and after, over the groups."""
    if not 0 < alpha <= 1:
        raise ValueError(f"smooth: alpha must lie in (0, 1], got {alpha}")
    model.eval()
    groups, amax = _observe(model, batches)
    modules = dict(model.named_modules())
    before, after, count = [], [], 0
    for group in groups:
        a = amax[group[0]].clamp(min=EPS)
        weights = [modules[n].weight for n in group]
        w = torch.cat([wt.detach().float() for wt in weights]).abs().amax(0).clamp(min=EPS)
        s = (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=EPS)
        inv = (1 / s).to(weights[0].dtype)
        for name in group:
            linear = modules[name]
            linear.weight.mul_(s.to(linear.weight.dtype))
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent] if parent else model, attr, Smoothed(linear, inv))
            count += 1
        before.append(float(a.max() / a.median()))
        flat = a / s
        after.append(float(flat.max() / flat.median()))
    return {
        "alpha": alpha,
        "groups": len(groups),
        "linears": count,
        "outlier_ratio_before": round(max(before), 2) if before else None,
        "outlier_ratio_after": round(max(after), 2) if after else None,
    }

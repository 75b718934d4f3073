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


def _run_with_hooks(model: nn.Module, hook: Any, batches: list[Any]) -> None:
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()


def _groups(model: nn.Module, example: Any) -> list[list[str]]:
    """Linears that read the same tensor, from one forward on a couple of rows (the inputs are held so
    their ids stay unique). A Linear called more than once per forward (shared weights, a loop) is left
    out: one factor cannot serve several inputs' groups."""
    seen: dict[int, list[str]] = {}
    held: list[torch.Tensor] = []
    called: set[str] = set()
    again: set[str] = set()

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            (again if name in called else called).add(name)
            seen.setdefault(id(inputs[0]), []).append(name)
            held.append(inputs[0])

        return record

    _run_with_hooks(model, hook, [example])
    return [g for g in seen.values() if not again.intersection(g)]


def _channel_amax(model: nn.Module, leaders: set[str], batches: list[Any]) -> dict[str, torch.Tensor]:
    """Per leader Linear, the absolute maximum of each input channel over all batches."""
    amax: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            if name in leaders:
                x = inputs[0]
                a = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float()
                amax[name] = torch.maximum(amax[name], a) if name in amax else a

        return record

    _run_with_hooks(model, hook, batches)
    return amax


@torch.no_grad()
def smooth_linears(model: nn.Module, batches: list[Any], alpha: float) -> dict[str, Any]:
    """Apply SmoothQuant to every Linear that `model` runs on `batches` (in place; the model computes the
    same function in float). Returns a report: groups, Linears, and the largest ratio of a channel's
    maximum to the median channel's, before and after, over the groups."""
    if not 0 < alpha <= 1:
        raise ValueError(f"smooth: alpha must lie in (0, 1], got {alpha}")
    model.eval()
    groups = _groups(model, batches[0][:2])
    amax = _channel_amax(model, {g[0] for g in groups}, batches)
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

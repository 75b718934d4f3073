"""The default search space for a model and its objectives, and the pipelines tried first.

What applies follows the model's layers: structured pruning for conv/linear layers, low rank when
hidden Linear layers hold a large share of the weights, dynamic int8 and int4 weight-only for such
Linear-heavy models. What is worth trying follows the objectives: latency wants fewer channels and
faster runtimes (int8, the `runtime` stage's measured choice, bf16 where the CPU has it natively);
size wants zeros and fewer bits (unstructured pruning stored sparse, codebooks). Unstructured sparsity
is left out for latency: dense CPU kernels compute the zeros (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from frugalml.optimize.config import Objective

LINEAR_HEAVY = 0.3  # hidden Linear layers holding this share of the weights make low rank worth a try


def layer_shares(model: nn.Module) -> dict[str, float]:
    """Shares of the weights in convolutions and in hidden Linear layers (the last Linear, usually
    the classifier, is not counted: low rank and pruning leave it alone by default)."""
    total = sum(p.numel() for p in model.parameters()) or 1
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hidden = sum(m.weight.numel() for m in linears[:-1])
    return {"conv": conv / total, "linear": hidden / total}


def _epochs(top: int) -> Any:
    return {"low": 1, "high": top} if top > 1 else 1


def default_space(model: nn.Module, objectives: list[Objective], train_epochs: int, train_lr: float,
                  native_bf16: bool) -> dict:
    shares = layer_shares(model)
    kinds = {"latency" if o.batch is not None else o.name for o in objectives}
    fast = bool(kinds & {"latency", "energy"})
    small = bool(kinds & {"size", "size-zstd", "params"})
    linear_heavy = shares["linear"] >= LINEAR_HEAVY
    top = max(1, min(12, train_epochs // 3))  # fine-tuning: up to a third of the base's training
    lr = round(train_lr * 0.2, 6)  # gentle: keep what the base learned (the pruning benchmark's setting)
    finetune = {"epochs": _epochs(top), "lr": lr, "distill": [0.0, 1.0]}
    prune: dict[str, Any] = {"none": {}}
    if shares["conv"] + shares["linear"] > 0:
        # activation importance is left out: on the Fashion-MNIST CNN it gave the worst one-shot start at
        # half the MACs and the best only at 80% (BENCHMARKS.md, "Which importance gives the CNN ...")
        prune["structured"] = {
            "kind": "prune", "method": "structured", "importance": ["l1", "taylor"],
            "macs_budget": {"low": 0.2, "high": 0.8, "step": 0.05}, "steps": [1, 2],
            "round_to": [None, 8, 16], "finetune": finetune,
        }
    if small:
        prune["unstructured"] = {
            "kind": "prune", "method": "unstructured", "ratio": {"low": 0.5, "high": 0.95, "step": 0.05},
            "schedule": "gradual", "storage": "sparse", "finetune": finetune,
        }
    space: dict[str, Any] = {"prune": prune}
    if linear_heavy:
        space["lowrank"] = {"none": {}, "svd": {
            "kind": "lowrank", "ratio": {"low": 0.1, "high": 0.7, "step": 0.05}, "epochs": _epochs(top),
            "train": {"lr": lr}, "distill": {"choose": {"none": None, "kd": {"temperature": 4.0, "alpha": 0.5}}},
        }}
    no_refs = {"fixed": []}  # fp32 reference timings are for reports; the search compares with the base
    quantize: dict[str, Any] = {"none": {}}
    if fast or small:
        quantize["int8"] = {"kind": "quantize", "mode": "static", "backend": "auto", "references": no_refs}
    if fast:
        batch = next((o.batch for o in objectives if o.batch is not None), None)
        quantize["runtime"] = {"kind": "runtime", **({"batch": batch} if batch else {})}
        if native_bf16:
            quantize["bf16"] = {"kind": "quantize", "mode": "bf16", "references": no_refs}
        if linear_heavy:
            quantize["dynamic"] = {"kind": "quantize", "mode": "dynamic", "backend": "auto", "references": no_refs}
    if small:
        # half_floats: centroids and biases in 2 bytes, for no measurable accuracy (BENCHMARKS.md, #9)
        quantize["codebook"] = {"kind": "quantize", "mode": "codebook", "bits": {"low": 3, "high": 6},
                                "half_floats": True, "qat": {"epochs": _epochs(min(3, top)), "lr": 0.01},
                                "references": no_refs}
        if linear_heavy:
            quantize["int4"] = {"kind": "quantize", "mode": "weight-only", "bits": 4, "references": no_refs}
    if len(quantize) > 1:
        space["quantize"] = quantize
    return space


def default_initial(objectives: list[Objective]) -> list[dict[str, Any]]:
    """Obvious pipelines to try before sampling (kept where the space admits them)."""
    kinds = {"latency" if o.batch is not None else o.name for o in objectives}
    out: list[dict[str, Any]] = []
    if kinds & {"latency", "energy"}:
        out += [{"quantize": "int8"},
                {"prune": "structured", "prune.structured.macs_budget": 0.5, "prune.structured.finetune.epochs": 8,
                 "prune.structured.finetune.distill": 1.0, "quantize": "int8"},
                {"quantize": "runtime"}]
    if kinds & {"size", "size-zstd", "params"}:
        out += [{"prune": "unstructured", "prune.unstructured.ratio": 0.9, "prune.unstructured.finetune.epochs": 12,
                 "prune.unstructured.finetune.distill": 1.0, "quantize": "codebook"},
                {"quantize": "int8"}]
    if "macs" in kinds:
        out.append({"prune": "structured", "prune.structured.macs_budget": 0.5})
    return out

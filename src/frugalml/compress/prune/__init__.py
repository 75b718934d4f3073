"""Pruning: the `prune` stage and the `prune()` verb (the same config classes for YAML and Python).

    from frugalml.compress.prune import StructuredPrune, prune
    small = prune(model, StructuredPrune(ratio=0.5, finetune={"epochs": 2}), data)
    small = prune(model, {"method": "structured", "ratio": 0.5}, data)  # the same, from a mapping

One file per method, each holding its config class, its function and its `@register_method` line:
`unstructured` (magnitude masks, global/per layer, one-shot or AGP; the default), `structured`
(Torch-Pruning dependency graph; channels, hidden units, heads), `nm` (N:M masks). `api` holds the
verb, the stage handler and the method registry; `sensitivity` analyses per-layer sensitivity and
feeds `per_layer: sensitivity`. The returned model is always a plain module: no pruning hooks,
masks or reparametrizations.
"""

from __future__ import annotations

from frugalml.compress.prune.api import (
    PruneInputs,
    prune,
    prune_methods,
    prune_with_metrics,
    register_method,
    run_prune_stage,
)
from frugalml.compress.prune.config import FinetuneConfig, MaskPruneConfig, PruneConfig
from frugalml.compress.prune.sensitivity import run_sensitivity, sensitivity

# the methods: importing a module registers its method (a new method adds one line here)
from frugalml.compress.prune.unstructured import UnstructuredPrune  # isort: skip
from frugalml.compress.prune.structured import StructuredPrune  # isort: skip
from frugalml.compress.prune.nm import NMPrune  # isort: skip

__all__ = [
    "FinetuneConfig",
    "MaskPruneConfig",
    "NMPrune",
    "PruneConfig",
    "PruneInputs",
    "StructuredPrune",
    "UnstructuredPrune",
    "prune",
    "prune_methods",
    "prune_with_metrics",
    "register_method",
    "run_prune_stage",
    "run_sensitivity",
    "sensitivity",
]

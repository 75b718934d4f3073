"""frugalml: make neural networks cheaper, and prove it with honest measurements.

The same typed configs drive YAML recipes and Python:

    import frugalml
    model = frugalml.load("runs/default/stages/baseline")
    data = frugalml.load_data("digits")
    metrics = frugalml.measure(model, data)

Attributes are imported lazily so `frugal --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "frugalml.artifact",
    "save": "frugalml.artifact",
    "load_data": "frugalml.data",
    "DataConfig": "frugalml.data",
    "Features": "frugalml.data",
    "build_model": "frugalml.models",
    "list_models": "frugalml.models",
    "ModelConfig": "frugalml.models",
    "Trainer": "frugalml.train",
    "TrainConfig": "frugalml.train",
    "measure": "frugalml.measure",
    "MeasureConfig": "frugalml.measure",
    "prune": "frugalml.compress.prune",
    "PruneConfig": "frugalml.compress.prune",
    "StructuredPrune": "frugalml.compress.prune",
    "UnstructuredPrune": "frugalml.compress.prune",
    "NMPrune": "frugalml.compress.prune",
    "quantize": "frugalml.compress.quantize",
    "QuantizeStage": "frugalml.compress.quantize",
    "distill": "frugalml.compress.distill",
    "DistillStage": "frugalml.compress.distill",
    "KD": "frugalml.compress.distill",
    "DKD": "frugalml.compress.distill",
    "DIST": "frugalml.compress.distill",
    "Hint": "frugalml.compress.distill",
    "lowrank": "frugalml.compress.lowrank",
    "LowRankStage": "frugalml.compress.lowrank",
    "ensemble": "frugalml.compress.ensemble",
    "EnsembleStage": "frugalml.compress.ensemble",
    "average": "frugalml.compress.average",
    "SWA": "frugalml.compress.average",
    "EMA": "frugalml.compress.average",
    "Soup": "frugalml.compress.average",
    "AugmentConfig": "frugalml.data.augment",
    "transfer": "frugalml.datawise.api",
    "TransferStage": "frugalml.datawise.transfer",
    "semisup": "frugalml.datawise.api",
    "SemiSupStage": "frugalml.datawise.semisup",
    "PseudoLabel": "frugalml.datawise.ssl_methods",
    "FixMatch": "frugalml.datawise.ssl_methods",
    "FlexMatch": "frugalml.datawise.ssl_methods",
    "MeanTeacher": "frugalml.datawise.ssl_methods",
    "find_label_issues": "frugalml.datawise.api",
    "LabelIssuesStage": "frugalml.datawise.label_issues",
    "auto_label": "frugalml.datawise.autolabel",
    "active_learning": "frugalml.datawise.active",
    "ActiveConfig": "frugalml.datawise.active",
    "load_recipe": "frugalml.recipe",
    "run_recipe": "frugalml.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'frugalml' has no attribute {name!r}")

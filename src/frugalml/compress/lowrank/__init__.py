"""Low-rank factorization: the `lowrank` stage and the `lowrank()` verb (same config class).

`layers` holds the factorized modules, the SVD / Tucker-2 math and `apply_spec`, with which artifact
loading rebuilds a factorized model from its ModelSpec; `stage` the config, the verb and the stage handler.
"""

from __future__ import annotations

from frugalml.compress.lowrank.layers import (
    SPEC_KEY,
    LowRankConv2d,
    LowRankLinear,
    Tucker2Conv2d,
    apply_plan,
    apply_spec,
    factorize,
)
from frugalml.compress.lowrank.stage import LowRankStage, lowrank, lowrank_with_metrics, run_lowrank_stage

__all__ = [
    "SPEC_KEY",
    "LowRankConv2d",
    "LowRankLinear",
    "LowRankStage",
    "Tucker2Conv2d",
    "apply_plan",
    "apply_spec",
    "factorize",
    "lowrank",
    "lowrank_with_metrics",
    "run_lowrank_stage",
]

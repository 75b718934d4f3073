"""`PruneStage`: the typed config of the `prune` stage (same class in YAML and in Python)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from frugalml.config import Config
from frugalml.stages import StageConfig

Importance = Literal["l1", "l2", "bn_scale", "taylor", "random"]


class FinetuneConfig(Config):
    """Fine-tuning after (or, for `gradual`, during) pruning. Starts from the recipe's `train:`
    section; `epochs`, `lr` and any other TrainConfig field in `overrides` replace its values."""

    epochs: int = Field(1, ge=0, description="fine-tuning epochs (split over `steps` when steps > 1)")
    lr: float | None = Field(None, gt=0, description="peak learning rate; default: the train section's")
    overrides: dict[str, Any] = Field(default_factory=dict, description="other TrainConfig fields")
    distill: float = Field(
        0.0, ge=0, description="weight of a distillation loss (KL to the unpruned model's outputs) added "
        "to the training loss; 0 = off"
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the distillation loss")

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from frugalml.train import TrainConfig

        unknown = sorted(set(v) - set(TrainConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(TrainConfig.model_fields)}")
        return v


class PruneStage(StageConfig):
    """Remove weights (unstructured), whole channels/heads (structured) or enforce N:M patterns."""

    kind: Literal["prune"] = "prune"
    method: Literal["unstructured", "structured", "nm"] = "unstructured"
    ratio: float | None = Field(
        None, ge=0, lt=1,
        description="unstructured: fraction of targeted weights set to zero; structured: fraction of "
        "channels (and attention heads) removed from each prunable layer",
    )  # fmt: skip
    # unstructured
    scope: Literal["global", "layer"] = Field("global", description="one magnitude threshold or one per layer")
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="gradual: AGP cubic schedule (Zhu & Gupta 2017) over the fine-tuning steps"
    )
    # structured
    importance: Importance = "l1"
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
    # N:M
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)
    # which layers
    ignore: list[str] = Field(default_factory=list, description="layer names (or prefixes) left untouched")
    targets: list[str] | None = Field(None, description="only these layers (or prefixes); default all")
    finetune: FinetuneConfig | None = None
    storage: Literal["dense", "sparse", "auto"] = Field(
        "auto", description="artifact format; auto = sparse (bitmask) for unstructured and nm"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PruneStage:
        budgets = [k for k in ("ratio", "macs_budget", "latency_budget_ms") if getattr(self, k) is not None]
        if self.method == "structured":
            if len(budgets) != 1:
                raise ValueError(
                    "structured pruning needs exactly one of ratio, macs_budget, latency_budget_ms"
                    + (f" (got {', '.join(budgets)})" if budgets else "")
                )
            if self.per_layer == "sensitivity" and self.ratio is None:
                raise ValueError("per_layer: sensitivity needs `ratio` (budgets use uniform ratios)")
        else:
            if self.ratio is None and self.method == "unstructured":
                raise ValueError("unstructured pruning needs `ratio` (fraction of weights to zero), e.g. 0.9")
            extra = [k for k in ("macs_budget", "latency_budget_ms") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to method: structured")
        if self.method == "nm" and self.n >= self.m:
            raise ValueError(f"N:M needs n < m (got n={self.n}, m={self.m}); e.g. n: 2, m: 4")
        if self.schedule == "gradual":
            if self.method != "unstructured":
                raise ValueError("schedule: gradual applies to method: unstructured only")
            if self.finetune is None or self.finetune.epochs < 1:
                raise ValueError("schedule: gradual prunes during fine-tuning: set finetune.epochs >= 1")
        if self.storage == "sparse" and self.method == "structured":
            raise ValueError("storage: sparse stores zeros compactly; structured pruning leaves none (use dense)")
        return self

    def use_sparse_storage(self) -> bool:
        return self.storage == "sparse" or (self.storage == "auto" and self.method in ("unstructured", "nm"))

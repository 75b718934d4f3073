"""The configs every pruning method shares: `PruneConfig` (the `prune` stage kind; each method
subclasses it in its own file) and `FinetuneConfig`. The same classes are the YAML schema and the
Python API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_serializer, field_validator

from frugalml.compress.distill.hints import Hint
from frugalml.config import Config
from frugalml.stages import StageConfig
from frugalml.train import TrainOverrides


class FinetuneConfig(Config):
    """Fine-tuning after (or, for `schedule: gradual`, during) pruning. Starts from the recipe's
    `train:` section; `epochs`, `lr` and the TrainConfig fields in `overrides` replace its values."""

    epochs: int = Field(1, ge=0, description="fine-tuning epochs (split over `steps` when steps > 1)")
    lr: float | None = Field(None, gt=0, description="peak learning rate; default: the train section's")
    overrides: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=TrainOverrides, description="other TrainConfig fields (optimizer, schedule, ...)"
    )
    distill: float = Field(
        0.0, ge=0, description="weight of a distillation loss (KL to the unpruned model's outputs) added "
        "to the training loss; 0 = off",
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the distillation loss")
    hints: list[Hint] = Field(
        default_factory=list, description="embedding/regression tasks, with distill > 0: also match these layers' "
        "outputs to the unpruned model's (MSE over real tokens), e.g. every encoder layer's output"
    )

    @field_validator("overrides")
    @classmethod
    def _not_twice(cls, v: Config) -> Config:
        twice = [k for k in ("epochs", "lr") if getattr(v, k) is not None]
        if twice:
            raise ValueError(f"set finetune.{twice[0]} instead of finetune.overrides.{twice[0]}")
        return v

    @field_serializer("overrides")
    def _only_set(self, v: Config) -> dict:  # None means "keep": a saved recipe lists what changes
        return {k: x for k, x in v.model_dump(mode="json").items() if x is not None}


class PruneConfig(StageConfig):
    """Base of the pruning methods (`kind: prune`); `method:` picks the subclass, unstructured by
    default. Holds only what every method shares: which layers, and the fine-tuning after."""

    kind: Literal["prune"] = "prune"
    method: str  # each method narrows it to its own Literal name
    ignore: list[str] = Field(default_factory=list, description="layer names (or prefixes) left untouched")
    targets: list[str] | None = Field(None, description="only these layers (or prefixes); default all")
    finetune: FinetuneConfig | None = None

    def artifact_format(self) -> str | None:
        """The artifact format the pruned model is saved in; None = the default dense torch-fp32."""
        return None


class MaskPruneConfig(PruneConfig):
    """Base of the methods that zero weights in place (the tensors keep their shape): their zeros
    can be stored compactly."""

    storage: Literal["dense", "sparse", "auto"] = Field(
        "auto", description="artifact format: sparse = only the nonzeros, with the smallest index encoding and "
        "entropy coding per tensor (torch-packed); auto = sparse"
    )

    def artifact_format(self) -> str | None:
        return None if self.storage == "dense" else "torch-packed"

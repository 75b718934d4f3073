"""TrainConfig: every knob of the one training loop, validated where it is declared."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, create_model, model_validator

from frugalml.config import Config
from frugalml.data.augment import AugmentConfig
from frugalml.errors import ConfigError


class TrainConfig(Config):
    """How to train a model. The same class is the Python API and the recipe's `train:` section."""

    epochs: int = Field(10, ge=0, description="passes over the training split; 0 = no training")
    batch_size: int = Field(128, ge=1, description="micro-batch size; effective batch = batch_size * grad_accum")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adamw)")
    nesterov: bool = Field(True, description="Nesterov momentum for SGD; off when momentum is 0")
    weight_decay: float = Field(5e-4, ge=0, description="decoupled for adamw; never applied to biases/norms")
    schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="learning-rate curve, stepped once per optimizer step"
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear warmup length (for onecycle: the rise phase; default 30% of the run)"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    bf16: bool | Literal["auto"] = Field(
        False, description="bfloat16 autocast for forward and loss; auto: only where bf16 is native (GPU, "
        "AVX512-BF16/AMX CPUs) — elsewhere it is emulated and slower than fp32"
    )
    channels_last: bool = Field(
        False, description="train conv nets in channels-last memory format (often much faster on CPU)"
    )
    early_stopping: int | None = Field(
        None, ge=1, description="patience in epochs without val-accuracy gain; best weights are restored"
    )
    augment: AugmentConfig | None = None
    seed: int | None = Field(None, description="seed for init-free randomness (shuffle, augment, dropout)")

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.epochs > 0 and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) is longer than epochs ({self.epochs})")
        return self

    def fingerprint(self) -> str:
        """Stable hash of every field; a checkpoint only resumes under the same fingerprint."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _all_optional(cls: type[Config], name: str) -> type[Config]:
    """A config with the same fields and constraints as `cls`, each optional (None = keep)."""
    fields: dict[str, Any] = {}
    for fname, f in cls.model_fields.items():
        ann = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[fname] = (ann | None, None)
    return create_model(name, __base__=Config, __doc__=f"Optional overrides of {cls.__name__}.", **fields)


TrainOverrides = _all_optional(TrainConfig, "TrainOverrides")


def merge_train(base: TrainConfig | None, *overrides: Config | dict | None, where: str = "train") -> TrainConfig:
    """The one way a stage changes the recipe's `train:` section: later overrides win. A config
    override applies the keys it was given (an explicit `augment: null` clears augmentation); a dict
    override's None values mean "keep". A result that does not validate is one ConfigError naming
    `where` and the key."""
    merged = (base or TrainConfig()).model_dump()
    changed: set[str] = set()
    for o in overrides:
        if o is None:
            continue
        values = o.model_dump(exclude_unset=True) if isinstance(o, Config) else {k: v for k, v in o.items() if v is not None}
        merged.update(values)
        changed |= set(values)
    if "warmup_epochs" not in changed and merged["epochs"] > 0 and merged["warmup_epochs"] > merged["epochs"]:
        merged["warmup_epochs"] = 0.0  # a short fine-tuning inherits no warm-up longer than itself
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}{'.' + key if key else ''}: {msg} (after applying the stage's overrides)") from None

"""TrainConfig: every knob of the one training loop, validated where it is declared."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from frugalml.config import Config
from frugalml.data.augment import AugmentConfig
from frugalml.errors import ConfigError


class PowerSGDConfig(Config):
    """PyTorch's PowerSGD DDP hook (Vogels et al. 2019): each gradient matrix is all-reduced as two
    rank-`rank` factors; vectors (biases, norms) and matrices too small to gain go uncompressed."""

    rank: int = Field(1, ge=1, description="matrix approximation rank (1, 2, 4: more is closer to plain DDP)")
    warmup_steps: int = Field(
        10, ge=0, description="optimizer steps of plain all-reduce before compressing (start_powerSGD_iter)"
    )
    error_feedback: bool = Field(True, description="add last step's compression error to this step's gradient")
    warm_start: bool = Field(True, description="reuse last step's factors as the power iteration's start")
    min_compression_rate: float = Field(2.0, ge=1, description="compress a matrix only if it shrinks this much")

    @model_validator(mode="after")
    def _torch_rule(self) -> PowerSGDConfig:
        if (self.error_feedback or self.warm_start) and self.warmup_steps < 2:
            raise ValueError("warmup_steps must be >= 2 with error_feedback or warm_start (PyTorch's PowerSGD rule)")
        return self


class LocalSGDConfig(Config):
    """Post-local SGD (Lin et al. 2020): plain DDP for `warmup_steps`, then every process steps on its
    own gradients and the parameters are averaged every `period` steps (PyTorch's post-local SGD hook
    and PeriodicModelAverager)."""

    period: int = Field(4, ge=2, description="optimizer steps between parameter averages (H)")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of plain DDP before local steps start")


class DistributedConfig(Config):
    """How training runs on several processes (`frugal run --nproc N`, or any torchrun launch); a
    single process ignores it, so one recipe runs on 1 or N processes. `train.batch_size` stays the
    global batch: each of N processes trains on batch_size / N samples of it."""

    sharding: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every process holds the model; fsdp: parameters, gradients and optimizer "
        "state sharded across processes (FSDP2 fully_shard), for models that do not fit one device"
    )
    comm_hook: Literal["none", "fp16", "bf16", "powersgd"] = Field(
        "none", description="DDP gradient compression: fp16/bf16 casts, or PowerSGD low-rank factors"
    )
    powersgd: PowerSGDConfig = PowerSGDConfig()
    local_sgd: LocalSGDConfig | None = Field(None, description="average parameters every H steps instead of "
                                             "all-reducing gradients every step")
    bucket_mb: float = Field(25.0, gt=0, description="DDP gradient bucket size in MiB")
    find_unused_parameters: bool = Field(
        False, description="DDP: allow parameters that get no gradient in a step (slower)"
    )
    timeout: float = Field(
        1800.0, gt=0, description="seconds a collective waits for the other processes before the run fails"
    )

    @model_validator(mode="after")
    def _compatible(self) -> DistributedConfig:
        if self.sharding == "fsdp" and (self.comm_hook != "none" or self.local_sgd is not None):
            raise ValueError("comm_hook and local_sgd are DDP options; sharding: fsdp uses neither")
        if self.local_sgd is not None and self.comm_hook != "none":
            raise ValueError("local_sgd brings its own communication hook; leave comm_hook: none")
        return self


DEFAULT_DISTRIBUTED = DistributedConfig().model_dump(mode="json")


class TrainConfig(Config):
    """How to train a model. The same class is the Python API and the recipe's `train:` section."""

    epochs: int = Field(10, ge=0, description="passes over the training split; 0 = no training")
    batch_size: int = Field(128, ge=1, description="micro-batch size, global across processes; effective "
                            "batch = batch_size * grad_accum")
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
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.epochs > 0 and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) is longer than epochs ({self.epochs})")
        return self

    def fingerprint(self) -> str:
        """Stable hash of every field; a checkpoint only resumes under the same fingerprint. A default
        `distributed` section is left out, so checkpoints from before it existed still resume."""
        fields = self.to_dict()
        if fields["distributed"] == DEFAULT_DISTRIBUTED:
            del fields["distributed"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Overrides(Config):
    """Base of the all-optional override configs. A dump lists only the keys that were given: an unset
    key means "keep the recipe's value" while an explicit null can mean "clear" (`augment: null`), so
    the resolved recipe a run writes (recipe.yaml, optimize's best.yaml) must not spell unset keys as
    null — loaded back, that failed on `epochs: null` and silently dropped the recipe's augmentation."""

    @model_serializer(mode="wrap")
    def _given_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


def _all_optional(cls: type[Config], name: str) -> type[Config]:
    """A config with the same fields and constraints as `cls`, each optional (None = keep)."""
    fields: dict[str, Any] = {}
    for fname, f in cls.model_fields.items():
        ann = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[fname] = (ann | None, None)
    return create_model(name, __base__=_Overrides, __doc__=f"Optional overrides of {cls.__name__}.", **fields)


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

"""`QuantizeStage`: the typed config of the `quantize` stage (same class in YAML and in Python).
The allowed `mode:` and `backend:` values come from the backend registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from frugalml.compress.quantize.registry import MODES, backend_help, backend_names, get_backend
from frugalml.compress.quantize.select import REFERENCES
from frugalml.config import Config
from frugalml.errors import ConfigError
from frugalml.stages import StageConfig
from frugalml.train import TrainOverrides

Mode = Literal[tuple(MODES)]  # type: ignore[valid-type]
Backend = Literal[("auto", *backend_names())]  # type: ignore[valid-type]
Reference = Literal[tuple(REFERENCES)]  # type: ignore[valid-type]


class QATConfig(Config):
    """Quantization-aware fine-tuning through the trunk's Trainer. Starts from the recipe's `train:`
    section; `epochs`, `lr` and any other TrainConfig field in `overrides` replace its values."""

    epochs: int = Field(2, ge=1, description="fine-tuning epochs with fake quantization")
    lr: float = Field(0.005, gt=0, description="peak learning rate (small: the weights are already trained)")
    overrides: TrainOverrides = Field(default_factory=TrainOverrides, description="other TrainConfig fields")  # type: ignore[valid-type]


class QuantizeStage(StageConfig):
    """Lower the precision of weights (and activations) to int8/int4/fp16/bf16.

    `backend: auto` builds every backend that supports `mode` on this machine, measures accuracy on
    the val split and latency at every measure batch size, and keeps the fastest (at the largest batch
    size) whose accuracy drop stays within `tolerance`. For `mode: qat`, which trains, it keeps the
    first backend that can take the model (pt2e, else torch).
    """

    kind: Literal["quantize"] = "quantize"
    mode: Mode = Field("static", description=" | ".join(MODES))
    backend: Backend = Field("auto", description=backend_help())
    bits: Literal[8, 4] = Field(8, description="weight bits; 4 only for mode weight-only")
    group_size: int | None = Field(
        None,
        ge=1,
        description="int4 weight-only group; default: the largest of 128/64/32/16 dividing in_features",
    )
    calibration_batches: int = Field(8, ge=1, description="training batches observed by static PTQ")
    calibration_batch_size: int = Field(64, ge=1)
    observer: Literal["minmax", "histogram", "percentile"] = Field(
        "histogram", description="activation range estimator for static PTQ"
    )
    percentile: float = Field(99.99, gt=50, le=100, description="for observer: percentile")
    per_channel: bool = Field(True, description="one weight scale per output channel (else per tensor)")
    fuse: bool = Field(True, description="fold BatchNorm into convs and fuse conv-bn-relu before quantizing")
    tolerance: float = Field(
        0.5, ge=0, description="allowed val-accuracy drop in points, for backend auto and mixed_precision"
    )
    mixed_precision: bool = Field(
        False, description="keep the most sensitive layers in float until the drop is within tolerance"
    )
    qat: QATConfig = Field(default_factory=QATConfig)
    references: list[Reference] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REFERENCES),
        description="fp32 runtimes timed next to fp32 eager for honest speedups",
    )

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeStage:
        if self.bits == 4 and self.mode != "weight-only":
            raise ValueError(
                f"bits: 4 needs mode: weight-only (mode is {self.mode!r}); int8 is the only activation-quantized width"
            )
        if self.mixed_precision and self.mode != "static":
            raise ValueError(f"mixed_precision needs mode: static (mode is {self.mode!r})")
        if self.backend != "auto":
            try:
                get_backend(self.mode, self.backend)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return self

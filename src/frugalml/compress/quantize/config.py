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
    distill: float = Field(
        0.0, ge=0, description="weight of a distillation loss (KL to the outputs of the model before "
        "quantization) added to the hard-label loss; 0: labels only")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the distillation loss")
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
    bits: int = Field(
        8, ge=2, le=8, description="weight bits: 8 (int8 modes), 4 or 8 (weight-only), 2..8 (codebook: 2**bits "
        "shared values per layer)"
    )
    fold_batchnorm: bool = Field(
        True, description="codebook: fold BatchNorm into the convolutions first (exact; saves its tensors)"
    )
    layer_bits: dict[str, int] | None = Field(
        None, description="codebook: per-layer code widths (layer name -> 2..8) that override `bits`"
    )
    half_floats: bool = Field(
        False, description="codebook: round the float values left after fine-tuning (centroids, biases) to "
        "float16 values, which the artifact then stores in 2 bytes instead of 4 (the model still computes in "
        "fp32; the rounding is measured like the rest)"
    )
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
    smooth: float | None = Field(
        None, gt=0, le=1, description="SmoothQuant alpha (0..1] for modes static/dynamic: move activation outliers "
        "into the weights, calibrated on training batches, before int8 (backend onnxruntime; transformers)"
    )
    mixed_precision: bool = Field(
        False, description="keep the most sensitive layers in float until the drop is within tolerance"
    )
    batch: int | None = Field(
        None, ge=1, description="backend auto: the batch size whose median latency decides (one of "
        "measure.batch_sizes); default: the largest"
    )
    qat: QATConfig = Field(
        default_factory=QATConfig, description="fine-tuning for mode qat (fake quantization) and codebook (centroids)"
    )
    references: list[Reference] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REFERENCES),
        description="fp32 runtimes timed next to fp32 eager for honest speedups",
    )

    def trains(self) -> bool:
        return self.mode == "qat" or (self.mode == "codebook" and self.qat is not None and self.qat.epochs > 0)

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeStage:
        allowed = {"weight-only": (4, 8), "codebook": tuple(range(2, 9))}.get(self.mode, (8,))
        if self.bits not in allowed:
            raise ValueError(f"bits: {self.bits} does not fit mode {self.mode!r}; allowed: "
                             f"{', '.join(map(str, allowed))} (int8 is the only activation-quantized width)")
        if self.layer_bits is not None:
            if self.mode != "codebook":
                raise ValueError(f"layer_bits needs mode: codebook (mode is {self.mode!r})")
            bad = {k: v for k, v in self.layer_bits.items() if not 2 <= v <= 8}
            if bad:
                raise ValueError(f"layer_bits: code widths must lie in 2..8 (got {bad})")
        if self.half_floats and self.mode != "codebook":
            raise ValueError(f"half_floats needs mode: codebook (mode is {self.mode!r})")
        if self.qat.distill > 0 and self.mode not in ("qat", "codebook"):
            raise ValueError(f"qat.distill needs mode: qat or codebook (mode is {self.mode!r})")
        if self.mixed_precision and self.mode != "static":
            raise ValueError(f"mixed_precision needs mode: static (mode is {self.mode!r})")
        if self.smooth is not None and self.mode not in ("static", "dynamic"):
            raise ValueError(f"smooth needs mode: static or dynamic (int8 activations); mode is {self.mode!r}")
        if self.backend != "auto":
            try:
                impl = get_backend(self.mode, self.backend)
            except ConfigError as e:
                raise ValueError(str(e)) from None
            if self.smooth is not None and not impl.smooths:
                raise ValueError(f"smooth: backend {self.backend} cannot smooth; use backend: onnxruntime")
        return self

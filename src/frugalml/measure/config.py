"""How measurements are taken. Defaults favour stable numbers over speed; tests shrink them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from frugalml.config import Config


class MeasureConfig(Config):
    threads: int | None = Field(default=None, ge=1)  # None: every core this process may use
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    warmup_iters: int = Field(default=100, ge=0)
    warmup_seconds: float = Field(default=1.0, ge=0)
    iters: int = Field(default=50, ge=1)
    min_seconds: float = Field(default=1.0, ge=0)
    watts_per_core: float = Field(default=15.0, gt=0)
    roofline: bool = True
    accuracy: bool = True
    # fp32 runtimes timed next to the first stage's eager model, so every stage's speedup can also
    # be stated against the best fp32 runtime of the model the run started from
    references: list[Literal["torch-compile", "onnxruntime"]] = Field(
        default_factory=lambda: ["torch-compile", "onnxruntime"]
    )

    @field_validator("batch_sizes")
    @classmethod
    def _positive_sizes(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("batch_sizes must be a non-empty list of positive integers")
        return sorted(set(v))

"""Small building blocks and option checks shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from frugalml.errors import ConfigError
from frugalml.models._activations import make_activation


def conv_bn_act(
    cin: int,
    cout: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    activation: str | None = "relu",
    batch_norm: bool = True,
) -> nn.Sequential:
    """conv -> BN -> act as one Sequential, the pattern quantization fusion recognises."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    if activation is not None:
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor` (at least one multiple), not dropping more than 10%."""
    out = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if out < 0.9 * channels:
        out += divisor
    return out


def require(ok: bool, model: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"model {model!r}: {message}")


def positive_ints(model: str, key: str, values: Sequence[int], allow_empty: bool = False) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"model {model!r}: {key} must be a list of positive integers, got {values!r}")
    out = list(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out):
        raise ConfigError(f"model {model!r}: {key} must be a list of positive integers, got {values!r}")
    require(allow_empty or bool(out), model, f"{key} must not be empty")
    return out


def choice(model: str, key: str, value: str, allowed: Sequence[str]) -> str:
    require(value in allowed, model, f"{key}={value!r}; allowed: {', '.join(allowed)}")
    return value


def probability(model: str, key: str, value: float) -> float:
    require(
        isinstance(value, (int, float)) and 0.0 <= value < 1.0,
        model,
        f"{key} must be in [0, 1), got {value!r}",
    )
    return float(value)


class GAPClassifier(nn.Module):
    """`features` → global average pool → (dropout) → Linear: the head shared by cnn, mobilenet and
    shufflenet. Attribute names are part of the artifact format (state_dict keys): keep them."""

    def __init__(self, features: nn.Sequential, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))

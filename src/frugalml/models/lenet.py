"""LeNet-5: two 5x5 conv + pool stages and three fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from frugalml.models._activations import make_activation
from frugalml.models._layers import choice, positive_ints, require
from frugalml.models._registry import register_model


class LeNet5(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        activation: str,
        channels: Sequence[int],
        hidden: Sequence[int],
        pooling: str,
    ) -> None:
        super().__init__()
        pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
        c0, c1 = channels
        # 'same' padding keeps tiny inputs (8x8 digits) alive through both pools; on 32x32 the
        # classic unpadded LeNet would only differ in the flatten size, computed below anyway
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c0, 5, padding=2), make_activation(activation), pool(2, ceil_mode=True),
            nn.Conv2d(c0, c1, 5, padding=2), make_activation(activation), pool(2, ceil_mode=True),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        h0, h1 = hidden
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, h0), make_activation(activation),
            nn.Linear(h0, h1), make_activation(activation),
            nn.Linear(h1, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("lenet5")
def lenet5(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    channels: Sequence[int] = (6, 16),
    hidden: Sequence[int] = (120, 84),
    pooling: str = "max",
) -> nn.Module:
    channels = positive_ints("lenet5", "channels", channels)
    hidden = positive_ints("lenet5", "hidden", hidden)
    require(
        len(channels) == 2 and len(hidden) == 2,
        "lenet5",
        f"channels and hidden take exactly 2 sizes, got {channels}, {hidden}",
    )
    choice("lenet5", "pooling", pooling, ("max", "avg"))
    return LeNet5(input_shape, num_classes, activation, channels, hidden, pooling)

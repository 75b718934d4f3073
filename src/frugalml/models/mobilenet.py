"""MobileNetV2-style network (Sandler et al. 2018) sized for 8x8..32x32 inputs.

Inverted residual: 1x1 expand -> depthwise 3x3 -> 1x1 linear projection, residual when shapes match.
The stem does not downsample, because the inputs here are 4-7x smaller than ImageNet's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from frugalml.models._layers import GAPClassifier, conv_bn_act, probability, require, round_channels
from frugalml.models._registry import register_model

# (expand ratio or None for the option's default, out channels, repeats, first stride)
_SMALL_CONFIG = [(1, 16, 1, 1), (None, 24, 2, 2), (None, 32, 2, 2), (None, 64, 2, 2)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, activation: str) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(cin, hidden, 1, activation=activation))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden, activation=activation),
            conv_bn_act(hidden, cout, 1, activation=None),  # linear bottleneck: no activation
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(GAPClassifier):
    """Inverted-residual blocks with the shared global-average-pool classifier head."""


@register_model("mobilenet_v2")
def mobilenet_v2(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    width_mult: float = 1.0,
    expand_ratio: int = 4,
    last_channels: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    require(
        isinstance(width_mult, (int, float)) and width_mult > 0,
        "mobilenet_v2",
        f"width_mult must be > 0, got {width_mult!r}",
    )
    require(
        isinstance(expand_ratio, int) and expand_ratio >= 1,
        "mobilenet_v2",
        f"expand_ratio must be an int >= 1, got {expand_ratio!r}",
    )
    require(
        isinstance(last_channels, int) and last_channels > 0,
        "mobilenet_v2",
        f"last_channels must be a positive int, got {last_channels!r}",
    )
    dropout = probability("mobilenet_v2", "dropout", dropout)

    cin = round_channels(16 * width_mult)
    layers: list[nn.Module] = [conv_bn_act(input_shape[0], cin, 3, activation=activation)]
    size = min(input_shape[1:])
    for t, c, n, s in _SMALL_CONFIG:
        cout = round_channels(c * width_mult)
        for i in range(n):
            stride = s if i == 0 and size >= 2 else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(InvertedResidual(cin, cout, stride, t or expand_ratio, activation))
            cin = cout
    last = round_channels(last_channels * max(1.0, width_mult))
    layers.append(conv_bn_act(cin, last, 1, activation=activation))
    return MobileNetV2(nn.Sequential(*layers), last, num_classes, dropout)

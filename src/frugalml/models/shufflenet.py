"""ShuffleNetV2-style network (Ma et al. 2018) sized for 8x8..32x32 inputs.

Each unit splits the channels in two, transforms one half (1x1 -> depthwise 3x3 -> 1x1), concatenates
and shuffles channels so information crosses between halves. `groups` > 1 makes the 1x1 convs
grouped (as in ShuffleNetV1), cheaper still.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from frugalml.models._layers import GAPClassifier, conv_bn_act, probability, require, round_channels
from frugalml.models._registry import register_model

_STAGES = [(32, 2), (64, 3), (128, 2)]  # (out channels at width 1, units)


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate two (N, C, H, W) halves and shuffle channels with 2 groups, in one step.

    Channel 2i comes from `a[:, i]` and 2i+1 from `b[:, i]`, exactly `channel_shuffle(cat([a, b]), 2)`.
    Written as stack + flatten because Torch-Pruning reads that as "channel i of a and b map to
    channels 2i, 2i+1" and keeps the graph prunable; the usual view/transpose/view shuffle breaks
    its shape inference. No channel count is fixed at init.
    """
    return torch.stack([a, b], dim=2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, activation: str) -> None:
        super().__init__()
        # basic unit: half the channels pass through untouched; otherwise (downsampling or width
        # change) both branches see the whole input
        self.split = stride == 1 and cin == cout
        branch = cout // 2
        if not self.split:
            self.branch1 = nn.Sequential(
                conv_bn_act(cin, cin, 3, stride=stride, groups=cin, activation=None),
                conv_bn_act(cin, branch, 1, groups=groups, activation=activation),
            )
            branch_in = cin
        else:
            self.branch1 = nn.Identity()
            branch_in = cin // 2
        self.branch2 = nn.Sequential(
            conv_bn_act(branch_in, branch, 1, groups=groups, activation=activation),
            conv_bn_act(branch, branch, 3, stride=stride, groups=branch, activation=None),
            conv_bn_act(branch, branch, 1, groups=groups, activation=activation),
        )

    def pruning_ignored_layers(self) -> list[nn.Module]:
        """Convs whose outputs feed the split/shuffle: Torch-Pruning cannot shrink those consistently
        (`chunk(2)` needs equal halves), so only the channels inside each branch are prunable."""
        return [self.branch2[-1][0]] + ([] if self.split else [self.branch1[-1][0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            x1, x2 = x.chunk(2, dim=1)
            return interleave(x1, self.branch2(x2))
        return interleave(self.branch1(x), self.branch2(x))


class ShuffleNetV2(GAPClassifier):
    """Channel-split + shuffle blocks with the shared global-average-pool classifier head."""


@register_model("shufflenet_v2")
def shufflenet_v2(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    width: float = 1.0,
    groups: int = 1,
    last_channels: int = 256,
    dropout: float = 0.0,
) -> nn.Module:
    require(
        isinstance(width, (int, float)) and width > 0, "shufflenet_v2", f"width must be > 0, got {width!r}"
    )
    require(
        isinstance(groups, int) and groups >= 1,
        "shufflenet_v2",
        f"groups must be an int >= 1, got {groups!r}",
    )
    require(
        isinstance(last_channels, int) and last_channels > 0,
        "shufflenet_v2",
        f"last_channels must be a positive int, got {last_channels!r}",
    )
    dropout = probability("shufflenet_v2", "dropout", dropout)
    # every half-split must still divide by the 1x1 conv groups
    divisor = math.lcm(8, 2 * groups)

    cin = round_channels(16 * width, divisor)
    layers: list[nn.Module] = [conv_bn_act(input_shape[0], cin, 3, activation=activation)]
    size = min(input_shape[1:])
    for c, units in _STAGES:
        cout = round_channels(c * width, divisor)
        for i in range(units):
            stride = 2 if i == 0 and size >= 2 else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(ShuffleUnit(cin, cout, stride, groups, activation))
            cin = cout
    last = round_channels(last_channels * max(1.0, width), divisor)
    layers.append(conv_bn_act(cin, last, 1, groups=1, activation=activation))
    return ShuffleNetV2(nn.Sequential(*layers), last, num_classes, dropout)

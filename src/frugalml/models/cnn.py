"""A plain VGG-style CNN: conv3x3-BN-act blocks, early downsampling, global average pool, Linear.

The defaults (channels 32, 64, 96; max-pool after the first two blocks) are a good small model for
Fashion-MNIST: ~75K parameters. Nothing in `forward` depends on channel counts, so structured
pruning can shrink any conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from frugalml.models._layers import GAPClassifier, choice, conv_bn_act, positive_ints, probability, require
from frugalml.models._registry import register_model


class CNN(GAPClassifier):
    """Plain conv blocks with the shared global-average-pool classifier head."""


@register_model("cnn")
def cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    width: int = 32,
    depth: int = 3,
    channels: Sequence[int] | None = None,
    batch_norm: bool = True,
    dropout: float = 0.0,
    pooling: str = "max",
    pool_blocks: int = 2,
) -> nn.Module:
    """`depth` blocks of width*(1, 2, 3, ...) channels, or exactly `channels` if given.

    `pooling` ("max", "avg", "stride" for a strided conv, or "none") halves the resolution after each
    of the first `pool_blocks` blocks, as long as the feature map is at least 2x2.
    """
    if channels is None:
        require(isinstance(width, int) and width > 0, "cnn", f"width must be a positive int, got {width!r}")
        require(isinstance(depth, int) and depth > 0, "cnn", f"depth must be a positive int, got {depth!r}")
        channels = [width * (i + 1) for i in range(depth)]
    channels = positive_ints("cnn", "channels", channels)
    choice("cnn", "pooling", pooling, ("max", "avg", "stride", "none"))
    require(
        isinstance(pool_blocks, int) and pool_blocks >= 0,
        "cnn",
        f"pool_blocks must be >= 0, got {pool_blocks!r}",
    )
    dropout = probability("cnn", "dropout", dropout)

    blocks: list[nn.Module] = []
    cin, size = input_shape[0], min(input_shape[1:])
    for i, cout in enumerate(channels):
        down = pooling != "none" and i < pool_blocks and size >= 2
        stride = 2 if down and pooling == "stride" else 1
        block = conv_bn_act(cin, cout, 3, stride=stride, activation=activation, batch_norm=bool(batch_norm))
        if down and pooling in ("max", "avg"):
            block.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
        if down:
            size = (size + 1) // 2 if stride == 2 else size // 2
        blocks.append(block)
        cin = cout
    return CNN(nn.Sequential(*blocks), cin, num_classes, dropout)

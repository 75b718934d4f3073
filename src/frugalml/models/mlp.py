"""Multi-layer perceptron on the flattened image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn

from frugalml.models._activations import make_activation
from frugalml.models._layers import positive_ints, probability
from frugalml.models._registry import register_model


@register_model("mlp")
def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
) -> nn.Module:
    """Flatten -> [Linear -> act (-> Dropout)] per hidden size -> Linear."""
    sizes = positive_ints("mlp", "hidden", hidden, allow_empty=True)
    dropout = probability("mlp", "dropout", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in sizes:
        layers += [nn.Linear(width, h), make_activation(activation)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)

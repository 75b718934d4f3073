"""Activation functions by name. Each call returns a fresh module.

A fresh module per use matters: Torch-Pruning and quantization fusion (conv-bn-relu) treat every
module instance as one node, so a shared activation would tie unrelated layers together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from frugalml.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    # one shared slope: a per-channel slope would have to be pruned with its channels
    "prelu": lambda: nn.PReLU(num_parameters=1),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
}


def activation_names() -> list[str]:
    return sorted(ACTIVATIONS)


def make_activation(name: str) -> nn.Module:
    """A new activation module (never in-place, so inputs are never overwritten)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; allowed: {', '.join(activation_names())}") from None

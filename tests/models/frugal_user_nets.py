"""User model factories for the `package.module:factory` tests (importable from tests/models)."""

from __future__ import annotations

import math

import torch.nn as nn

from frugalml.models import make_activation

NOT_CALLABLE = 42


def tiny_net(input_shape, num_classes, *, activation="relu", hidden=16):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        make_activation(activation),
        nn.Linear(hidden, num_classes),
    )


def no_activation_net(input_shape, num_classes, hidden=8):
    """A factory that has no `activation` option at all."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Linear(hidden, num_classes)
    )


def picky_net(input_shape, num_classes, **options):
    """Accepts anything by signature, but rejects unknown options itself."""
    unknown = set(options) - {"activation"}
    if unknown:
        raise TypeError(f"picky_net() got unexpected options {sorted(unknown)}")
    return tiny_net(input_shape, num_classes)


def not_a_module(input_shape, num_classes, **options):
    return "a string"

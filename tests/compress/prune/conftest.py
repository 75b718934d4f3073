"""Shared by the pruning tests: one small synthetic dataset, and zoo models and their specs built the
same way everywhere."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn

from frugalml.data import DataConfig, load_data
from frugalml.data.bundle import DataBundle
from frugalml.models import build_model


@pytest.fixture(scope="session")
def data() -> DataBundle:
    return load_data(DataConfig(name="synthetic", synthetic_samples=96, synthetic_classes=4, synthetic_shape=(1, 16, 16)))


@pytest.fixture
def zoo(data: DataBundle) -> Callable[..., nn.Module]:
    """`zoo(name, **kwargs)`: a zoo model for `data`, seeded, in eval mode."""

    def build(name: str, **kwargs) -> nn.Module:
        torch.manual_seed(0)
        return build_model(name, data.input_shape, data.num_classes, **kwargs).eval()

    return build


@pytest.fixture
def spec(data: DataBundle) -> Callable[..., dict]:
    """`spec(name, **kwargs)`: the ModelSpec of `zoo(name, **kwargs)`."""

    def make(name: str, **kwargs) -> dict:
        return {"name": name, "kwargs": kwargs, "input_shape": list(data.input_shape), "num_classes": data.num_classes}

    return make

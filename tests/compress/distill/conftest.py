"""Shared by the distillation tests: a small synthetic dataset and seeded tiny models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn

from frugalml.data import DataConfig, load_data
from frugalml.data.bundle import DataBundle
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer


@pytest.fixture(scope="session")
def data() -> DataBundle:
    return load_data(DataConfig(name="synthetic", synthetic_samples=240, synthetic_classes=4, synthetic_shape=(1, 8, 8)))


@pytest.fixture
def zoo(data: DataBundle) -> Callable[..., nn.Module]:
    """`zoo(name, seed=0, **kwargs)`: a seeded zoo model for `data`."""

    def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(name, data.input_shape, data.num_classes, **kwargs)

    return build


@pytest.fixture(scope="session")
def teacher(data: DataBundle) -> nn.Module:
    """A small CNN trained for a few epochs (shared: tests must not modify it)."""
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes, width=8)
    Trainer(model, data, TrainConfig(epochs=3, batch_size=32), progress=False).fit()
    return model.eval()

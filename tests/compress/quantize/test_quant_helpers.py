"""Shared tiny models, data and configs for the quantization and export tests (no tests here).

Models are trained for a few epochs on small synthetic data so that their predictions are not
ties: top-1 agreement between float and quantized outputs is then a meaningful check.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import pytest
import torch
import torch.nn as nn

from frugalml.data import DataConfig, load_data
from frugalml.data.bundle import DataBundle
from frugalml.measure import MeasureConfig
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer

SHAPE = (1, 12, 12)
FAST_MEASURE = MeasureConfig(
    threads=1, batch_sizes=[1, 8], warmup_iters=1, warmup_seconds=0.0, iters=3, min_seconds=0.0, roofline=False
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@lru_cache
def data() -> DataBundle:
    return load_data(DataConfig(name="synthetic", synthetic_samples=400, synthetic_shape=SHAPE, synthetic_classes=4))


def spec(name: str, **kwargs) -> dict:
    return {"name": name, "kwargs": {"activation": "relu", **kwargs}, "input_shape": list(SHAPE), "num_classes": 4}


@lru_cache
def _trained(name: str, kwargs_items: tuple, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, SHAPE, 4, **dict(kwargs_items))
    Trainer(model, data(), TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=0), progress=False).fit()
    return model.eval()


def trained(name: str, epochs: int = 3, **kwargs) -> tuple[nn.Module, dict]:
    """A fresh copy of a (cached) trained zoo model and its ModelSpec."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    return copy.deepcopy(_trained(name, items, epochs)), spec(name, **kwargs)


def cnn() -> tuple[nn.Module, dict]:
    return trained("cnn", channels=[8, 16])


def mlp() -> tuple[nn.Module, dict]:
    return trained("mlp", hidden=[64, 32])


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def batch(n: int = 64) -> torch.Tensor:
    return data().sample_input(n)

"""Shared by the quantization and export tests: small synthetic datasets, trained zoo and user
models (trained a few epochs so their predictions are not ties: top-1 agreement between float and
quantized outputs is then a meaningful check), a fast MeasureConfig, and `make`, which builds one
backend's quantized model."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from functools import lru_cache

import pytest
import torch
import torch.nn as nn

from frugalml.compress.quantize import QuantizedModel, QuantizeStage
from frugalml.compress.quantize.stage import build, context
from frugalml.data import DataConfig, load_data
from frugalml.data.bundle import DataBundle
from frugalml.measure import MeasureConfig
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer

SHAPE = (1, 12, 12)
USER_NETS = "tests.compress.quantize.user_nets"
LOG = logging.getLogger("test.quantize")


@lru_cache
def _data(shape: tuple[int, int, int], classes: int) -> DataBundle:
    return load_data(
        DataConfig(name="synthetic", synthetic_samples=400, synthetic_shape=shape, synthetic_classes=classes)
    )


@lru_cache
def _trained(name: str, shape: tuple, classes: int, kwargs_items: tuple, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, shape, classes, **dict(kwargs_items))
    Trainer(
        model,
        _data(shape, classes),
        TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=0),
        progress=False,
    ).fit()
    return model.eval()


def trained(
    name: str, shape: tuple = SHAPE, classes: int = 4, epochs: int = 3, **kwargs
) -> tuple[nn.Module, dict]:
    """A fresh copy of a (cached) trained model and its ModelSpec (what `build_model` attached)."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    model = copy.deepcopy(_trained(name, tuple(shape), classes, items, epochs))
    return model, model.frugal_spec


@pytest.fixture(scope="session")
def data() -> DataBundle:
    """400 synthetic 1x12x12 images of 4 classes."""
    return _data(SHAPE, 4)


@pytest.fixture(scope="session")
def mnist_data() -> DataBundle:
    """400 synthetic 1x28x28 images of 10 classes: what the classic MNIST CNN takes."""
    return _data((1, 28, 28), 10)


@pytest.fixture
def cnn() -> tuple[nn.Module, dict]:
    return trained("cnn", channels=[8, 16])


@pytest.fixture
def mlp() -> tuple[nn.Module, dict]:
    return trained("mlp", hidden=[64, 32])


@pytest.fixture
def zoo() -> Callable[..., tuple[nn.Module, dict]]:
    """`zoo(name, **kwargs)`: any trained model (zoo name or `package.module:factory`) and its spec."""
    return trained


@pytest.fixture
def hand_cnn() -> Callable[..., tuple[nn.Module, dict]]:
    """`hand_cnn(shared=True)`: the user-written CNN (a block applied twice unless shared=False)."""
    return lambda shared=True: trained(f"{USER_NETS}:hand_cnn", epochs=2, shared=shared)


@pytest.fixture
def mnist_net() -> tuple[nn.Module, dict]:
    """The classic MNIST CNN, untrained (it stays at chance on synthetic 28x28 data anyway): its tests
    check what runs and what fails, not accuracy."""
    return trained(f"{USER_NETS}:mnist_net", shape=(1, 28, 28), classes=10, epochs=0)


@pytest.fixture
def measure_cfg() -> MeasureConfig:
    return MeasureConfig(
        threads=1,
        batch_sizes=[1, 8],
        warmup_iters=1,
        warmup_seconds=0.0,
        iters=3,
        min_seconds=0.0,
        roofline=False,
    )


@pytest.fixture
def make(data: DataBundle) -> Callable[..., QuantizedModel]:
    """`make(model, backend, data=..., workdir=..., **QuantizeStage fields)`: one backend's quantized
    model (2 calibration batches unless told otherwise)."""

    def make_one(
        model: nn.Module, backend: str, *, data: DataBundle = data, workdir=None, **fields
    ) -> QuantizedModel:
        cfg = QuantizeStage(**{"calibration_batches": 2, **fields})
        return build(model, cfg, backend, context(cfg, data, workdir=workdir, log=LOG))

    return make_one


def top1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


@pytest.fixture
def agreement() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """Top-1 agreement of two batches of logits."""
    return top1

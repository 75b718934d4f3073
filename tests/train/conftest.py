"""Fixtures for the training tests (helpers live in train_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from train_helpers import make_bundle

from frugalml.data.bundle import DataBundle


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data() -> DataBundle:
    return make_bundle()

"""Every zoo model survives factorization: smaller or equal, same output shape, and its artifact
loads back to identical outputs. Parametrized over the registry, so new models are covered."""

from __future__ import annotations

import pytest
import torch

from frugalml import artifact
from frugalml.compress.lowrank import LowRankStage, lowrank_with_metrics
from frugalml.data import DataConfig, load_data
from frugalml.models import build_model, list_models


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=64, synthetic_classes=4, synthetic_shape=(1, 8, 8)))


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_factorizes_and_loads_back(name, data, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.num_classes).eval()
    out, m = lowrank_with_metrics(model, LowRankStage(ratio=0.25, epochs=0), data)
    assert m["params_after"] <= m["params_before"]
    assert not any("fails with it" in why for why in m["skipped"].values()), m["skipped"]
    spec = {**model.frugal_spec, "lowrank": m["plan"]}
    artifact.save_any(out, tmp_path / "a", spec)
    loaded = artifact.load(tmp_path / "a")
    x = data.sample_input(3)
    with torch.no_grad():
        assert out(x).shape == (3, data.num_classes)
        assert torch.allclose(loaded(x), out(x), atol=1e-6)

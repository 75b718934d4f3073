"""Sensitivity analysis: table + plot per layer and ratio; per-layer ratio allocation from the table."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from frugalml import artifact
from frugalml.compress.prune import run_sensitivity, sensitivity
from frugalml.compress.prune.sensitivity import allocate_ratios, read_table
from frugalml.data import DataConfig, load_data
from frugalml.errors import ConfigError
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer, evaluate

DATA = DataConfig(name="digits", limit=600)  # learnable in seconds, so accuracy drops mean something


@pytest.fixture(scope="module")
def data():  # overrides the synthetic data of conftest.py: drops need a learnable task
    return load_data(DATA)


@pytest.fixture(scope="module")
def trained(data):
    """A briefly trained small CNN, so accuracy drops mean something."""
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes, channels=[8, 16])
    Trainer(model, data, TrainConfig(epochs=5, batch_size=32, lr=0.05, seed=0), progress=False).fit()
    assert evaluate(model, data.x_val, data.y_val) > 0.8
    return model.eval()


def test_structured_table_and_plot(trained, data, tmp_path):
    table = sensitivity(trained, data, ratios=[0.25, 0.75], out_dir=tmp_path)
    base = evaluate(trained, data.x_val, data.y_val)
    assert table["base_accuracy"] == pytest.approx(base)
    assert {r["layer"] for r in table["rows"]} == {"features.0.0", "features.1.0"}  # never the classifier
    assert len(table["rows"]) == 4
    for r in table["rows"]:
        assert r["drop"] == pytest.approx(base - r["accuracy"])
        assert 0.0 <= r["accuracy"] <= 1.0
    assert json.loads((tmp_path / "sensitivity.json").read_text())["rows"] == table["rows"]
    with open(tmp_path / "sensitivity.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and set(rows[0]) == {"layer", "channels", "ratio", "accuracy", "drop"}
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # removing three quarters of a trained layer's channels hurts more than a quarter
    drops = {(r["layer"], r["ratio"]): r["drop"] for r in table["rows"]}
    assert all(drops[(layer, 0.75)] > drops[(layer, 0.25)] for layer in ("features.0.0", "features.1.0"))


def test_unstructured_rows_per_weight_tensor(trained, data):
    table = sensitivity(trained, data, ratios=[0.5], method="unstructured", layers=["features"])
    assert [r["layer"] for r in table["rows"]] == ["features.0.0", "features.1.0"]
    # the model is left as it was
    assert (trained.features[0][0].weight != 0).all()


def test_run_sensitivity_from_an_artifact(trained, data, tmp_path):
    spec = {"name": "cnn", "kwargs": {"channels": [8, 16]}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}
    artifact.save(trained, tmp_path / "art", spec)
    out = run_sensitivity(tmp_path / "art", DATA, tmp_path / "sens", [0.5])
    table = read_table(out)
    assert table["method"] == "structured" and len(table["rows"]) == 2
    assert (out / "sensitivity.png").is_file() and (out / "sensitivity.csv").is_file()


def test_allocation_favours_insensitive_layers():
    table = {"method": "structured", "rows": [
        {"layer": "robust", "channels": 10, "ratio": 0.25, "drop": 0.0},
        {"layer": "robust", "channels": 10, "ratio": 0.5, "drop": 0.001},
        {"layer": "robust", "channels": 10, "ratio": 0.75, "drop": 0.01},
        {"layer": "fragile", "channels": 10, "ratio": 0.25, "drop": 0.05},
        {"layer": "fragile", "channels": 10, "ratio": 0.5, "drop": 0.2},
        {"layer": "fragile", "channels": 10, "ratio": 0.75, "drop": 0.5},
    ]}
    ratios = allocate_ratios(table, 0.4, 0.9)
    assert ratios["robust"] > ratios["fragile"]
    assert (ratios["robust"] + ratios["fragile"]) / 2 == pytest.approx(0.4, abs=1e-3)
    assert all(0 <= r <= 0.9 for r in ratios.values())


def test_bad_sensitivity_inputs(trained, data, tmp_path):
    with pytest.raises(ConfigError, match="ratios"):
        sensitivity(trained, data, ratios=[0.5, 1.0])
    with pytest.raises(ConfigError, match="method"):
        sensitivity(trained, data, method="channels")
    with pytest.raises(ConfigError, match="no layer named 'conv9'.*valid layers: features.0.0"):
        sensitivity(trained, data, layers=["conv9"])
    with pytest.raises(ConfigError, match="does not exist"):
        read_table(tmp_path / "missing.json")

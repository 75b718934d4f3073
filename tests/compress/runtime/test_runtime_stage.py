"""The runtime stage: every candidate is measured, the fastest within tolerance is kept, at the
batch size asked for; chosen runtimes save and load like any artifact."""

from __future__ import annotations

import pytest
import torch

from frugalml import artifact
from frugalml.compress.prune import UnstructuredPrune, prune
from frugalml.compress.runtime import CSRLinear, RuntimeStage, SparseModel, runtime
from frugalml.data import load_data
from frugalml.errors import ConfigError
from frugalml.measure import MeasureConfig
from frugalml.models import build_model
from tests.conftest import FAST_MEASURE


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic")


@pytest.fixture
def mcfg():
    return MeasureConfig(**{**FAST_MEASURE, "batch_sizes": [1, 16]})


def test_every_candidate_is_measured_and_the_fastest_within_tolerance_wins(data, mcfg):
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[64]).eval()
    cfg = RuntimeStage(candidates=["eager", "onnxruntime", "bf16"], batch=16, tolerance=100.0)
    chosen, report = runtime(model, cfg, data, measure=mcfg)
    entries = report["runtime_candidates"]
    assert [e["candidate"] for e in entries] == ["eager", "onnxruntime", "bf16"]
    ok = [e for e in entries if "error" not in e]
    fastest = min(ok, key=lambda e: e["latency_ms"]["b16"]["median"])
    assert fastest["chosen"] and report["optimized_for"] == "b16"
    assert sum(e["chosen"] for e in entries) == 1


def test_tolerance_excludes_inaccurate_runtimes(data, mcfg, monkeypatch):
    from frugalml.compress.quantize import select

    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32]).eval()
    real = select.accuracy

    def fake(predict, d, limit=None):  # ONNX Runtime "loses" 10 points: it must not be kept
        return real(predict, d, limit) - (0.1 if getattr(predict, "frugal_runtime", "") == "onnxruntime-fp32" else 0)

    monkeypatch.setattr(select, "accuracy", fake)
    chosen, report = runtime(model, RuntimeStage(candidates=["eager", "onnxruntime"], tolerance=0.5), data,
                             measure=mcfg)
    assert getattr(chosen, "frugal_runtime", "torch-eager") == "torch-eager"


def test_csr_linear_matches_the_dense_layer_and_the_sparse_candidate_round_trips(data, tmp_path):
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[64]).eval()
    sparse = prune(model, UnstructuredPrune(ratio=0.9, scope="layer"), data)
    x = data.sample_input(5)
    layer = next(m for m in sparse.modules() if isinstance(m, torch.nn.Linear))
    flat = torch.randn(5, layer.in_features)
    assert torch.allclose(CSRLinear(layer)(flat), layer(flat), atol=1e-5)
    s = SparseModel(sparse, ["1"])
    assert torch.allclose(s(x), sparse(x), atol=1e-5)
    artifact.save_any(s, tmp_path / "s", sparse.frugal_spec, {"format": s.format})
    loaded = artifact.load(tmp_path / "s")
    assert loaded.frugal_runtime == "torch-sparse-csr" and torch.allclose(loaded(x), s(x))


def test_nothing_sparse_enough_is_a_skipped_candidate_with_its_reason(data, mcfg):
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32]).eval()
    _, report = runtime(model, RuntimeStage(candidates=["eager", "sparse"]), data, measure=mcfg)
    sparse = report["runtime_candidates"][1]
    assert "error" in sparse and "zeros" in sparse["error"]


def test_a_batch_that_is_not_measured_is_one_line(data, mcfg):
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32]).eval()
    with pytest.raises(ConfigError, match="batch: 64 is not measured"):
        runtime(model, RuntimeStage(candidates=["eager"], batch=64), data, measure=mcfg)


def test_a_model_left_in_train_mode_is_measured_in_eval_mode_and_keeps_its_statistics(data, mcfg):
    """runtime() on a user's model in train mode: accuracy and latency passes must not move its
    BatchNorm statistics (they would drift toward the val split and the first test rows)."""
    model = build_model("cnn", data.input_shape, data.num_classes, channels=[4, 8]).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    assert stats, "the cnn has BatchNorm layers"
    runtime(model, RuntimeStage(candidates=["eager"], batch=16, tolerance=100.0), data, measure=mcfg)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())

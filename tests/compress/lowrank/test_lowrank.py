"""Low-rank factorization: exact at full rank, the expected error when truncated, ranks by ratio or
energy, artifacts that load back, per-layer timing, and one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.compress.lowrank import LowRankStage, factorize, lowrank, lowrank_with_metrics
from frugalml.compress.lowrank import stage as lr_stage
from frugalml.compress.lowrank.layers import FACTORIZED, energy_kept, full_rank, rank_for, unfoldings
from frugalml.data import DataConfig, load_data
from frugalml.errors import ConfigError
from frugalml.models import build_model

TRAIN = {"batch_size": 32, "lr": 0.02}


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=160, synthetic_classes=4, synthetic_shape=(1, 8, 8)))


def _layers() -> list[tuple[nn.Module, str]]:
    torch.manual_seed(0)
    return [
        (nn.Linear(20, 12), "linear"),
        (nn.Conv2d(6, 10, 3, padding=1, stride=2), "conv-svd"),
        (nn.Conv2d(6, 10, 3, padding=1, bias=False), "tucker2"),
    ]


def _input(layer: nn.Module) -> torch.Tensor:
    return torch.randn(5, 20) if isinstance(layer, nn.Linear) else torch.randn(5, 6, 7, 7)


@pytest.mark.parametrize("i", range(3))
def test_exact_at_full_rank(i):
    layer, kind = _layers()[i]
    new = factorize(layer, kind, full_rank(layer, kind))
    x = _input(layer)
    with torch.no_grad():
        assert torch.allclose(new(x), layer(x), atol=1e-5)
    assert torch.allclose(new.dense_weight(), layer.weight, atol=1e-5)


@pytest.mark.parametrize("i", range(2))
@pytest.mark.parametrize("rank", [1, 3, 5])
def test_truncated_error_is_the_dropped_energy(i, rank):
    # Eckart-Young: the best rank-r approximation misses exactly the trailing singular values
    layer, kind = _layers()[i]
    new = factorize(layer, kind, [rank])
    w = layer.weight.detach()
    err = float((new.dense_weight() - w).norm() / w.norm())
    s = torch.linalg.svdvals(unfoldings(layer, kind)[0])
    assert err == pytest.approx(math.sqrt(1 - energy_kept(s, rank)), rel=1e-4)


def test_tucker2_error_shrinks_with_rank_and_params_count():
    layer, _ = _layers()[2]
    w = layer.weight.detach()
    ranks = ([2, 2], [4, 5], [6, 10])  # (r_in, r_out); full rank is (6 inputs, 10 outputs)
    errors = [float((factorize(layer, "tucker2", r).dense_weight() - w).norm() / w.norm()) for r in ranks]
    assert errors[0] > errors[1] > errors[2] == pytest.approx(0.0, abs=1e-5)
    small = factorize(layer, "tucker2", [2, 3])
    assert sum(p.numel() for p in small.parameters()) == 6 * 2 + 2 * 3 * 9 + 3 * 10


def test_rank_rules():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9/14, 13/14, 14/14
    assert rank_for(s, None, 0.6) == 1 and rank_for(s, None, 0.9) == 2 and rank_for(s, None, 0.95) == 3
    assert rank_for(s, 0.5, None) == 2 and rank_for(s, 0.01, None) == 1 and rank_for(s, 1.0, None) == 3


def test_stage_halves_an_mlp_and_the_artifact_loads_back(tmp_path, data):
    torch.manual_seed(0)
    mlp = build_model("mlp", data.input_shape, data.num_classes, hidden=[64, 64])
    cfg = LowRankStage(ratio=0.25, epochs=1, train=TRAIN)
    out, m = lowrank_with_metrics(mlp, cfg, data, progress=False)
    assert m["params_after"] < 0.6 * m["params_before"]
    assert set(m["plan"]) == {n for n, v in m["layers"].items() if not v.get("kept_dense")}
    assert all(v["dense_ms_b64"] > 0 and "slower_than_dense" in v for v in m["layers"].values())
    assert "training" in m and m["val_accuracy_before_finetune"] is not None
    # the spec records the plan; the artifact rebuilds the factorized layers
    small = lowrank(mlp, cfg.model_copy(update={"epochs": 0}), data)
    spec = small.frugal_spec
    assert spec["lowrank"] and spec["name"] == "mlp"
    artifact.save_any(small, tmp_path / "a", spec)
    loaded = artifact.load(tmp_path / "a")
    x = data.sample_input(8)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    assert artifact.read_info(tmp_path / "a")["spec"]["lowrank"]  # a plain fp32 artifact whose spec rebuilds it


def test_layers_that_would_not_shrink_stay_dense(data):
    torch.manual_seed(0)
    mlp = build_model("mlp", data.input_shape, data.num_classes, hidden=[32])
    _, m = lowrank_with_metrics(mlp, LowRankStage(energy=0.999, epochs=0), data)  # layers "1" (64->32), "3" (32->4)
    assert "not fewer than" in m["skipped"]["1"] and m["skipped"]["3"] == "the classifier (skip_classifier)"
    assert not m["plan"]
    _, m = lowrank_with_metrics(mlp, LowRankStage(ratio=0.25, skip_classifier=False, epochs=0), data)
    assert set(m["plan"]) == {"1", "3"}


def test_skip_slower_keeps_slow_factorizations_dense(monkeypatch, data):
    calls = iter([1.0, 2.0] * 10)  # dense 1 ms, factorized 2 ms, for every layer
    monkeypatch.setattr(lr_stage, "_time_ms", lambda module, x, iters=15: next(calls))
    torch.manual_seed(0)
    mlp = build_model("mlp", data.input_shape, data.num_classes, hidden=[64])
    out, m = lowrank_with_metrics(mlp, LowRankStage(ratio=0.25, skip_slower=True, epochs=0), data)
    assert not m["plan"] and m["slower_layers"] and all(v["kept_dense"] for v in m["layers"].values())
    assert not any(isinstance(mod, FACTORIZED) for mod in out.modules())


def test_convolutions_by_tucker2_and_a_fixed_rank(data):
    torch.manual_seed(0)
    cnn = build_model("cnn", data.input_shape, data.num_classes, width=8)
    cfg = LowRankStage(ranks={"features.1.0": [4, 8], "features.2.0": [6, 6]}, conv="tucker2", epochs=0)
    out, m = lowrank_with_metrics(cnn, cfg, data)
    assert m["plan"] == {"features.1.0": {"kind": "tucker2", "rank": [4, 8]},
                         "features.2.0": {"kind": "tucker2", "rank": [6, 6]}}
    assert out(data.sample_input(2)).shape == (2, data.num_classes)


def test_bad_input_is_one_line(data):
    torch.manual_seed(0)
    mlp = build_model("mlp", data.input_shape, data.num_classes, hidden=[16])  # layers "1" (64->16), "3" (16->4)
    with pytest.raises(ConfigError, match=r"stages.lr.ranks.1: rank 40 is outside 1..16, the layer's full rank "
                                          r"\(weight \[16, 64\]\)"):
        lowrank_with_metrics(mlp, LowRankStage(ranks={"1": 40}), data, where="stages.lr")
    with pytest.raises(ConfigError, match=r"stages.lr.ranks.nope: not a layer that can be factorized; candidates: 1, 3"):
        lowrank_with_metrics(mlp, LowRankStage(ranks={"nope": 2}), data, where="stages.lr")
    with pytest.raises(ConfigError, match=r"stages.lr.targets: no layer 'nope'; candidates: 0, 1, 2, 3"):
        lowrank_with_metrics(mlp, LowRankStage(ratio=0.5, targets=["nope"]), data, where="stages.lr")
    with pytest.raises(ConfigError, match="ratio and energy both set"):
        LowRankStage.checked("stages.lr", {"ratio": 0.5, "energy": 0.9})
    with pytest.raises(ConfigError, match="set ratio, energy or ranks"):
        LowRankStage.checked("stages.lr", {})

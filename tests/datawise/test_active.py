"""Simulated active learning: strategies pick different samples, the curves and their area are
reported, and `frugal active` writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugalml.cli import main
from frugalml.datawise.active import ActiveConfig, active_learning, area_under_curve, scores
from frugalml.errors import ConfigError

SMALL = {"data": {"name": "synthetic", "synthetic_samples": 400}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
         "train": {"epochs": 3, "batch_size": 16}, "initial": 12, "batch": 12, "rounds": 2}


def test_scores_rank_uncertain_samples_first():
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
    assert scores(probs, "entropy").argmax() == 1
    assert scores(probs, "margin").argmax() == 2
    assert scores(probs, "least_confidence").argmax() in (1, 2) and scores(probs, "least_confidence").argmin() == 0


def test_each_strategy_picks_different_samples():
    result = active_learning(ActiveConfig.model_validate(SMALL))
    firsts = {name: frozenset(r["picked"][0]) for name, r in result["strategies"].items()}
    assert len(set(firsts.values())) == 4  # four strategies, four different first picks
    for r in result["strategies"].values():
        assert [c["labels"] for c in r["curve"]] == [12, 24, 36]
        assert len(set(r["picked"][0]) | set(r["picked"][1])) == 24  # never picks a sample twice
        assert 0 <= r["auc"] <= 1


def test_area_under_curve_is_mean_accuracy_over_the_range():
    curve = [{"labels": 10, "accuracy": 0.5}, {"labels": 20, "accuracy": 0.7}, {"labels": 40, "accuracy": 0.7}]
    assert area_under_curve(curve) == pytest.approx((0.6 * 10 + 0.7 * 20) / 30)


def test_too_many_labels_asked_is_a_config_error():
    with pytest.raises(ConfigError, match="initial \\+ batch \\* rounds"):
        active_learning(ActiveConfig.model_validate({**SMALL, "initial": 300, "batch": 100}))


def test_cli_writes_curves_and_plot(tmp_path):
    rc = main(["active", "--data", "synthetic", "--model", "mlp", "--epochs", "2", "--initial", "10", "--batch", "10",
               "--rounds", "1", "--strategies", "margin,random", "--out", str(tmp_path / "al")])
    assert rc == 0
    result = json.loads((tmp_path / "al" / "active.json").read_text())
    assert set(result["strategies"]) == {"margin", "random"}
    assert (tmp_path / "al" / "active.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["active", "--data", "synthetic", "--strategies", "entropy,guess", "--out", str(tmp_path / "x")]) == 2

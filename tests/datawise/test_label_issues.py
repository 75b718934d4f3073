"""Label issues: out-of-fold confident learning finds flipped labels; the stage writes its list and
image grid, the report shows them, and retraining on the cleaned set is the stage's model."""

from __future__ import annotations

import builtins
import json

import pytest

from frugalml.errors import UnsupportedError
from frugalml.pipeline import run_recipe
from frugalml.recipe import Recipe
from tests.conftest import FAST_MEASURE

pytest.importorskip("cleanlab", reason="optional extra 'labels' not installed")


def _recipe(**stage) -> Recipe:
    return Recipe.model_validate({
        "name": "noisy", "data": {"name": "synthetic", "synthetic_samples": 600, "label_noise": 0.1},
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}}, "train": {"epochs": 5, "batch_size": 32, "lr": 0.05},
        "measure": {**FAST_MEASURE, "roofline": False},
        "stages": [{"kind": "train", "name": "noisy"}, {"kind": "label_issues", "name": "clean", "folds": 3, **stage}],
    })


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "low_self_confidence"])
def test_finds_most_flipped_labels_and_reports_them(tmp_path, filter_by):
    results = run_recipe(_recipe(filter_by=filter_by), tmp_path / "run")
    li = results["stages"][1]["metrics"]["label_issues"]
    assert li["filter_by"] == filter_by
    assert li["flipped"] == results["data"]["noisy_labels"] == round(0.1 * results["data"]["train"])
    assert li["recall"] >= 0.6 and li["precision"] >= 0.5
    assert li["retrained"]["samples"] == results["data"]["train"] - li["found"]
    assert (tmp_path / "run" / li["csv"]).read_text().startswith("rank,index,given,suggested")
    assert (tmp_path / "run" / "label-issues-clean.png").is_file()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "label efficiency" in report and "label-issues-clean.png" in report
    assert "accuracy-vs-labels.png" in report
    sizes = json.loads((tmp_path / "run" / "stages" / "clean" / "metrics.json").read_text())["size_bytes"]
    assert sizes < 20_000  # the issue list and image are not counted as the model's size


@pytest.mark.parametrize("filter_by", ["low_self_confidence", "low_normalized_margin"])
def test_ranked_filters_flag_the_estimated_number_lowest_score_first(filter_by):
    np = pytest.importorskip("numpy")
    from cleanlab.count import num_label_issues

    from frugalml.datawise.label_issues import find_issues

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), truth] = 0.9
    probs += rng.uniform(0, 0.005, probs.shape)  # distinct scores, every true class well above the others
    probs /= probs.sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.choice(300, 30, replace=False)
    labels[flipped] = (truth[flipped] + 1) % 3
    assert num_label_issues(labels, probs) == 30  # confident learning counts the flips exactly here
    issues = find_issues(labels, probs, filter_by)
    assert set(issues.tolist()) == set(flipped.tolist())
    given = probs[issues, labels[issues]]
    others = np.where(np.eye(3, dtype=bool)[labels[issues]], -1.0, probs[issues]).max(1)
    score = given if filter_by == "low_self_confidence" else given - others
    assert (np.diff(score) >= 0).all()  # most likely first, by the filter's own score


def test_without_retraining_the_parent_passes_through(tmp_path):
    results = run_recipe(_recipe(retrain=False, parent="noisy"), tmp_path / "run")
    noisy, clean = (s["metrics"]["accuracy"] for s in results["stages"])
    assert noisy == clean


def test_missing_extra_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    with pytest.raises(UnsupportedError, match=r"pip install 'frugalml\[labels\]'"):
        run_recipe(_recipe(), tmp_path / "run")

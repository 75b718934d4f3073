"""The report's label-efficiency plot and table, and the new recipes validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugalml.recipe import load_recipe
from frugalml.report import write_reports
from frugalml.report.label_plots import has_label_data, label_points

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _results(budget: int, acc: float) -> dict:
    metrics = {"accuracy": acc, "params": 10, "size_bytes": 100, "compressed_bytes": 90, "latency_ms": {"b1": {"median": 0.1}, "b64": {"median": 1.0}}}
    semi = {**metrics, "accuracy": acc + 0.05, "labels_used": budget * 10,
            "semisup": {"pseudo_labels": {"quantity": 0.5, "precision": 0.9}}}
    return {"schema": 1, "recipe": f"lpc{budget}", "env": {}, "data": {"train": budget * 10, "unlabelled": 900},
            "stages": [{"name": "supervised", "kind": "train", "metrics": metrics},
                       {"name": "fixmatch", "kind": "semisup", "metrics": semi},
                       {"name": "int8", "kind": "quantize", "parent": "fixmatch", "metrics": metrics}]}


def test_points_per_method_across_runs():
    runs = [("a", _results(10, 0.6)), ("b", _results(30, 0.7))]
    assert has_label_data(runs)
    pts = label_points(runs)
    assert set(pts) == {"supervised", "fixmatch"}  # the quantized stage trained with no labels of its own
    assert [p[0] for p in pts["fixmatch"]] == [100, 300] and pts["fixmatch"][0][1] == pytest.approx(65.0)


def test_reports_gain_the_plot_and_table(tmp_path):
    paths = write_reports(tmp_path, [("a", _results(10, 0.6)), ("b", _results(30, 0.7))])
    md = paths["md"].read_text()
    assert (tmp_path / "accuracy-vs-labels.png").read_bytes()[:4] == b"\x89PNG"
    assert "label efficiency" in md and "| fixmatch | 100 | 65.00% | 50.0% | 90.0% |" in md
    plain = {**_results(10, 0.6), "data": {"train": 100}}
    plain["stages"] = plain["stages"][:1]
    write_reports(tmp_path / "plain", plain)
    assert not (tmp_path / "plain" / "accuracy-vs-labels.png").exists()


@pytest.mark.parametrize("name", ["fashion-mnist-labels", "fashion-mnist-label-noise", "fashion-mnist-transfer-compress"])
def test_recipes_validate(name):
    recipe, _ = load_recipe(str(RECIPES / f"{name}.yaml"), [])
    assert recipe.stages

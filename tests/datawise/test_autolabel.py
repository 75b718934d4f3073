"""Automated labelling: calibrated per-class thresholds reach the target precision on held-out data;
`frugal label` writes the labels and the review list; bad input is one clear line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from frugalml import artifact
from frugalml.cli import main
from frugalml.data import DataConfig, load_data
from frugalml.datawise.autolabel import NEVER, calibrate_thresholds
from frugalml.models import build_model
from frugalml.train import TrainConfig, Trainer


def _scores(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-like scores where a higher confidence is right more often, differently per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    conf = 1 - 0.8 * rng.beta(0.3, 3.0, n)  # mostly confident, as trained networks are
    right = rng.uniform(size=n) < conf ** (1 + labels % 3)  # some classes are harder
    pred = np.where(right, labels, (labels + rng.integers(1, classes, n)) % classes)
    probs = np.full((n, classes), 0.0)
    probs[np.arange(n), pred] = conf
    probs += (1 - probs.sum(1, keepdims=True)) / classes
    return probs, labels


@pytest.mark.parametrize("target", [0.9, 0.97, 0.99])
def test_thresholds_reach_the_target_precision_on_held_out_data(target):
    probs, labels = _scores(40_000, 5, seed=0)
    thr = calibrate_thresholds(probs, labels, target)
    assert np.isfinite(thr).any()
    held_probs, held_labels = _scores(40_000, 5, seed=1)
    pred = held_probs.argmax(1)
    accepted = held_probs.max(1) >= thr[pred]
    precision = (pred[accepted] == held_labels[accepted]).mean()
    assert precision >= target - 0.005 and accepted.mean() > 0.05
    assert (thr[np.isfinite(thr)] > 0.2).all()


def test_a_class_that_cannot_reach_the_target_is_never_auto_labelled():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 0, 1])  # class 0's most confident prediction is wrong
    thr = calibrate_thresholds(probs, labels, 0.5)
    assert thr[0] == NEVER and np.isfinite(thr[1])


@pytest.fixture
def trained_artifact(tmp_path):
    data = load_data(DataConfig(name="digits", labels_per_class=40))
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32])
    Trainer(model, data, TrainConfig(epochs=8, batch_size=32, lr=0.05), progress=False).fit()
    return artifact.save(model.eval(), tmp_path / "model", model.frugal_spec)


def test_cli_labels_the_pool_and_lists_the_rest(trained_artifact, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    rc = main(["label", str(trained_artifact), "--data", "digits", "--labels-per-class", "40",
               "--target-precision", "0.85", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "measured precision" in printed and "for a person" in printed
    rows = list(csv.DictReader(out.open()))
    review = list(csv.DictReader(out.with_suffix(".review.csv").open()))
    assert len(rows) == len(load_data(DataConfig(name="digits", labels_per_class=40)).x_unlabelled)
    assert {r["status"] for r in rows} <= {"auto", "review"}
    assert len(review) == sum(r["status"] == "review" for r in rows)
    assert [float(r["confidence"]) for r in review] == sorted(float(r["confidence"]) for r in review)


def test_cli_labels_a_folder_of_images(trained_artifact, tmp_path):
    folder = tmp_path / "pool" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    out = tmp_path / "folder.csv"
    assert main(["label", str(trained_artifact), "--data", "digits", "--unlabelled", str(tmp_path / "pool"),
                 "--out", str(out)]) == 0
    assert [r["id"] for r in csv.DictReader(out.open())] == [f"nested/img{i}.png" for i in range(3)]


def test_bad_input_is_one_line_exit_2(trained_artifact, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["label", str(trained_artifact), "--data", "digits", "--unlabelled", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["label", str(trained_artifact), "--data", "digits", "--out", str(tmp_path / "x.csv")]) == 2
    assert "nothing to label" in capsys.readouterr().err
    assert main(["label", str(trained_artifact), "--data", "digits", "--labels-per-class", "500",
                 "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels per class asked" in err

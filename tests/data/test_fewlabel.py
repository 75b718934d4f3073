"""data.labels_per_class (exact, stratified, seeded few-label split) and data.label_noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frugalml.data import DataConfig, load_data
from frugalml.data.fewlabel import few_label_split, flip_labels
from frugalml.errors import DataError


def test_split_is_exact_per_class_and_disjoint():
    y = np.repeat(np.arange(5), [30, 12, 50, 7, 20])
    lab, unl = few_label_split(y, 7, seed=3)
    assert np.array_equal(np.bincount(y[lab], minlength=5), np.full(5, 7))
    assert len(set(lab) & set(unl)) == 0 and sorted([*lab, *unl]) == list(range(len(y)))


def test_split_is_seeded():
    y = np.repeat(np.arange(4), 25)
    a, _ = few_label_split(y, 5, seed=0)
    b, _ = few_label_split(y, 5, seed=0)
    c, _ = few_label_split(y, 5, seed=1)
    assert np.array_equal(a, b) and set(a) != set(c)


def test_more_labels_than_a_class_has_is_one_clear_error():
    y = np.repeat(np.arange(3), [10, 4, 10])
    with pytest.raises(DataError, match=r"data.labels_per_class: 5 labels per class asked, but class 'b' has only 4"):
        few_label_split(y, 5, seed=0, class_names=["a", "b", "c"])


def test_load_data_keeps_n_labels_and_the_rest_as_the_pool():
    full = load_data(DataConfig(name="digits"))
    few = load_data(DataConfig(name="digits", labels_per_class=10))
    assert torch.equal(torch.bincount(few.y_train, minlength=10), torch.full((10,), 10))
    assert len(few.y_train) + len(few.x_unlabelled) == len(full.y_train)
    assert len(few.y_unlabelled) == len(few.x_unlabelled)
    assert few.mean == full.mean and torch.equal(few.x_test, full.x_test)  # same inputs at every budget
    assert few.describe()["unlabelled"] == len(few.x_unlabelled)
    # the labelled samples are training samples with their own labels
    rows = {tuple(r.flatten().tolist()): int(c) for r, c in zip(full.x_train, full.y_train)}
    assert all(rows[tuple(r.flatten().tolist())] == int(c) for r, c in zip(few.x_train, few.y_train))


def test_label_noise_flips_the_asked_fraction_to_other_classes():
    y = torch.arange(200) % 10
    noisy, idx = flip_labels(y, 0.05, 10, seed=0)
    assert len(idx) == 10 and (noisy[idx] != y[idx]).all()
    assert np.array_equal(np.delete(noisy.numpy(), idx), np.delete(y.numpy(), idx))
    b = load_data(DataConfig(name="digits", label_noise=0.1))
    assert int((b.y_train != b.y_train_true).sum()) == round(0.1 * len(b.y_train))
    assert b.describe()["noisy_labels"] == round(0.1 * len(b.y_train))

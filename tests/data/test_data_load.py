"""load_data as a whole: built-in sources, splits, limit, normalization, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _datafiles import make_idx_dir, sample_ids

from frugalml.data import (
    DATASETS,
    DataBundle,
    DataConfig,
    RawDataset,
    list_datasets,
    load_data,
    register_dataset,
)
from frugalml.data._split import allocate
from frugalml.data.fashion_mnist import DEFAULT_ROOT
from frugalml.errors import ConfigError, DataError


def test_digits_shape_classes_and_scale():
    b = load_data(DataConfig(name="digits", normalize=False))
    assert isinstance(b, DataBundle)
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10
    assert len(b.y_train) + len(b.y_val) + len(b.y_test) == 1797
    assert len(b.y_test) == round(0.2 * 1797)
    assert float(b.x_train.min()) == 0.0 and float(b.x_train.max()) == 1.0  # 0..16 scaled to [0, 1]
    # stratified: each class is ~20% of its own count in test
    totals = torch.bincount(torch.cat([b.y_train, b.y_val, b.y_test]), minlength=10).double()
    test_counts = torch.bincount(b.y_test, minlength=10).double()
    assert torch.all((test_counts - 0.2 * totals).abs() <= 1)


def test_synthetic_defaults_and_learnable():
    from sklearn.linear_model import LogisticRegression

    b = load_data("synthetic")
    assert b.input_shape == (1, 8, 8) and b.num_classes == 4
    assert len(b.y_train) + len(b.y_val) + len(b.y_test) == 512
    clf = LogisticRegression(max_iter=500).fit(b.x_train.flatten(1).numpy(), b.y_train.numpy())
    accuracy = clf.score(b.x_test.flatten(1).numpy(), b.y_test.numpy())
    assert accuracy > 0.6  # chance is 0.25


def test_synthetic_configurable_and_fixed_across_seeds():
    cfg = DataConfig(name="synthetic", synthetic_samples=90, synthetic_classes=3, synthetic_shape=(3, 5, 4))
    b = load_data(cfg)
    assert b.input_shape == (3, 5, 4) and b.num_classes == 3
    assert len(b.y_train) + len(b.y_val) + len(b.y_test) == 90
    # another seed reshuffles the splits but not the data itself
    other = load_data(cfg.model_copy(update={"seed": 5}))
    assert not torch.equal(b.y_test, other.y_test)
    assert sorted(_rows(b)) == sorted(_rows(other))


def _rows(b: DataBundle) -> list[tuple]:
    """Every sample of all three splits, un-normalized, as hashable rows."""
    x = torch.cat([b.x_train, b.x_val, b.x_test]) * b.std + b.mean
    return [tuple(np.round(r, 4)) for r in x.flatten(1).numpy()]


def test_same_seed_same_splits_other_seed_different():
    a = load_data(DataConfig(name="digits", seed=3))
    b = load_data(DataConfig(name="digits", seed=3))
    c = load_data(DataConfig(name="digits", seed=4))
    for split in ("train", "val", "test"):
        torch.testing.assert_close(a.split(split), b.split(split), rtol=0, atol=0)
    assert not torch.equal(a.y_test, c.y_test)
    assert not torch.equal(a.x_val, c.x_val)


def test_val_is_stratified_and_sized(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_train=90, classes=3)
    b = load_data(DataConfig(name=f"idx:{d}", val_fraction=0.2))
    assert len(b.y_val) == 18
    assert torch.bincount(b.y_val, minlength=3).tolist() == [6, 6, 6]
    assert len(b.y_train) == 72


def test_val_fraction_zero_gives_empty_val():
    b = load_data(DataConfig(name="synthetic", val_fraction=0.0))
    assert len(b.y_val) == 0 and b.x_val.shape[1:] == b.x_train.shape[1:]


def test_limit_caps_train_stratified_and_is_subset(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_train=300, classes=3)
    full = load_data(DataConfig(name=f"idx:{d}", normalize=False, seed=1))
    small = load_data(DataConfig(name=f"idx:{d}", normalize=False, seed=1, limit=30))
    assert len(small.y_train) == 30
    assert torch.bincount(small.y_train, minlength=3).tolist() == [10, 10, 10]
    assert set(sample_ids(small.x_train)) <= set(sample_ids(full.x_train))
    # val shrinks in proportion (30 * 0.1 / 0.9 ~= 3) and stays a subset of the full val split
    assert len(small.y_val) == 3
    assert set(sample_ids(small.x_val)) <= set(sample_ids(full.x_val))
    assert len(small.y_test) == len(full.y_test)


def test_limit_larger_than_train_is_noop():
    a = load_data(DataConfig(name="synthetic", limit=10_000))
    b = load_data(DataConfig(name="synthetic"))
    assert torch.equal(a.x_train, b.x_train)


def test_normalization_uses_train_stats_only():
    raw = load_data(DataConfig(name="digits", normalize=False, seed=2))
    b = load_data(DataConfig(name="digits", seed=2))
    x = raw.x_train.double()
    assert b.mean == pytest.approx(float(x.mean()), rel=1e-5)
    assert b.std == pytest.approx(float(x.std(unbiased=False)), rel=1e-5)
    assert float(b.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(b.x_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(b.x_test, (raw.x_test - b.mean) / b.std)
    torch.testing.assert_close(b.x_val, (raw.x_val - b.mean) / b.std)
    # test statistics did not leak in: they differ from train's
    assert float(raw.x_test.mean()) != pytest.approx(b.mean, abs=1e-7)


def test_normalize_false_keeps_unit_range():
    b = load_data(DataConfig(name="synthetic", normalize=False))
    assert (b.mean, b.std) == (0.0, 1.0)
    assert float(b.x_train.min()) >= 0.0 and float(b.x_train.max()) <= 1.0


def test_unknown_dataset_lists_allowed():
    with pytest.raises(ConfigError, match="allowed: digits, fashion-mnist, folder:DIR, fortunes:DIR, idx:DIR, synthetic, text:DIR"):
        load_data("cifar")


def test_source_without_path_rejects_argument():
    with pytest.raises(ConfigError, match="digits"):
        load_data("digits:/tmp")


def test_list_datasets_describes_every_source():
    listed = dict(list_datasets())
    assert {"digits", "fashion-mnist", "idx", "folder", "synthetic"} <= set(listed)
    assert listed["idx"].startswith("idx:DIR:") and listed["folder"].startswith("folder:DIR:")
    assert all(len(desc) > 20 for desc in listed.values())


def test_new_source_is_one_decorator():
    @register_dataset("tiny-test-source")
    def tiny(cfg: DataConfig, arg: str | None) -> RawDataset:
        """Two classes of constant images."""
        y = np.arange(40) % 2
        x = np.broadcast_to(y[:, None, None, None], (40, 1, 2, 2)).astype(np.float32)
        return RawDataset(x, y, class_names=["a", "b"])

    try:
        b = load_data(DataConfig(name="tiny-test-source", normalize=False))
        assert b.class_names == ["a", "b"] and b.input_shape == (1, 2, 2)
        assert torch.equal(b.x_test[:, 0, 0, 0], b.y_test.float())
        assert ("tiny-test-source", "tiny-test-source: Two classes of constant images.") in list_datasets()
    finally:
        DATASETS._items.pop("tiny-test-source")


def test_bad_source_labels_are_caught():
    @register_dataset("bad-labels-source")
    def bad(cfg: DataConfig, arg: str | None) -> RawDataset:
        """Labels beyond the class list."""
        return RawDataset(np.zeros((4, 1, 2, 2), np.float32), np.array([0, 1, 2, 3]), class_names=["a", "b"])

    try:
        with pytest.raises(DataError, match="labels span 0..3.*2 classes"):
            load_data("bad-labels-source")
    finally:
        DATASETS._items.pop("bad-labels-source")


@pytest.mark.parametrize("counts,take", [([50, 30, 20], 10), ([7, 7, 7], 5), ([1, 1, 98], 3), ([5, 5], 0)])
def test_allocate_is_exact_and_proportional(counts, take):
    counts = np.array(counts)
    got = allocate(counts, take)
    assert got.sum() == take
    assert np.all(np.abs(got - counts * take / counts.sum()) < 1)


def test_fashion_mnist_missing_root_explains_fix(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist.*root"):
        load_data(DataConfig(name="fashion-mnist", root=str(tmp_path / "absent")))


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    b = load_data(DataConfig(name="fashion-mnist", limit=500))
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert b.class_names[0] == "T-shirt/top" and b.class_names[9] == "Ankle boot"
    assert len(b.y_train) == 500 and len(b.y_test) == 10_000
    assert torch.bincount(b.y_test, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(b.y_train, minlength=10).tolist() == [50] * 10

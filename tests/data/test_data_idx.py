"""IDX parsing and the idx:DIR source, including every corrupt-file error."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from _datafiles import idx_arrays, make_idx_dir, sample_ids, write_idx

from frugalml.data import DataConfig, load_data
from frugalml.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from frugalml.errors import ConfigError, DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    x, y = idx_arrays(7, 3, 5, 0)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / f"i{suffix}", x), IMAGES_MAGIC), x)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / f"l{suffix}", y), LABELS_MAGIC), y)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_uses_official_test_split(tmp_path, gz):
    d = make_idx_dir(tmp_path / "idx", gz=gz, n_train=60, n_test=20, classes=3, size=6)
    b = load_data(DataConfig(name=f"idx:{d}", normalize=False, val_fraction=0.2))
    assert b.input_shape == (1, 6, 6)
    assert b.num_classes == 3 and b.class_names == ["0", "1", "2"]
    assert (len(b.y_train), len(b.y_val), len(b.y_test)) == (48, 12, 20)
    # the test split is the t10k file, untouched and in file order
    x_test, y_test = idx_arrays(20, 3, 6, 10_000)
    torch.testing.assert_close(b.x_test[:, 0], torch.from_numpy(x_test).float() / 255)
    assert b.y_test.tolist() == y_test.tolist()
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64


def test_idx_train_and_val_partition_the_train_file(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_train=60)
    b = load_data(DataConfig(name=f"idx:{d}", normalize=False, val_fraction=0.25))
    train_ids, val_ids = sample_ids(b.x_train), sample_ids(b.x_val)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(60))
    # each sample keeps its own label (id i has label i % 3)
    assert all(label == i % 3 for i, label in zip(train_ids + val_ids, b.y_train.tolist() + b.y_val.tolist()))


def test_idx_mixed_gz_and_plain_files_and_root(tmp_path):
    d = make_idx_dir(tmp_path / "idx")
    labels = d / "train-labels-idx1-ubyte"
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels.read_bytes()))
    labels.unlink()
    b = load_data(DataConfig(name="idx", root=str(d)))
    assert len(b.y_train) + len(b.y_val) == 60


def test_idx_without_directory_is_config_error():
    with pytest.raises(ConfigError, match="idx:DIR"):
        load_data("idx")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="nope"):
        load_data(f"idx:{tmp_path / 'nope'}")


def test_missing_file_is_named(tmp_path):
    d = make_idx_dir(tmp_path / "idx")
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_data(f"idx:{d}")


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic_is_named(tmp_path, gz):
    d = make_idx_dir(tmp_path / "idx", gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    write_idx(d / name, idx_arrays(60, 3, 6, 0)[0], magic=0x00000903)
    with pytest.raises(DataError, match=rf"{name}.*magic.*0x00000903"):
        load_data(f"idx:{d}")


def test_labels_file_with_images_magic(tmp_path):
    d = make_idx_dir(tmp_path / "idx")
    write_idx(d / "train-labels-idx1-ubyte", np.zeros((60, 2, 2), np.uint8))
    with pytest.raises(DataError, match=f"train-labels-idx1-ubyte.*expected 0x{LABELS_MAGIC:08x}"):
        load_data(f"idx:{d}")


@pytest.mark.parametrize("cut", [1, 100, 1000])
def test_truncated_file_is_named(tmp_path, cut):
    d = make_idx_dir(tmp_path / "idx")
    path = d / "t10k-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) - cut, 2)])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*truncated"):
        load_data(f"idx:{d}")


def test_trailing_bytes_are_rejected(tmp_path):
    d = make_idx_dir(tmp_path / "idx", gz=True)
    path = d / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00\x01"))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*trailing"):
        load_data(f"idx:{d}")


def test_corrupt_gzip_is_named(tmp_path):
    d = make_idx_dir(tmp_path / "idx", gz=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_data(f"idx:{d}")


def test_count_mismatch_names_both_files(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_train=60)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(59, np.uint8))
    with pytest.raises(
        DataError, match="train-images-idx3-ubyte has 60 images.*train-labels-idx1-ubyte has 59"
    ):
        load_data(f"idx:{d}")


def test_train_test_image_size_mismatch(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_test=20)
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((20, 5, 5), np.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*differs"):
        load_data(f"idx:{d}")

"""The folder:DIR source: class folders of PNG/JPEG images, resized, with its error cases."""

from __future__ import annotations

import pytest
import torch
from _datafiles import make_image_folder

from frugalml.data import DataConfig, load_data
from frugalml.errors import DataError


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_loads_resizes_and_splits(tmp_path, channels):
    root = make_image_folder(tmp_path / "folder", per_class=10)
    b = load_data(DataConfig(name=f"folder:{root}", image_size=8, channels=channels, normalize=False))
    assert b.input_shape == (channels, 8, 8)
    assert b.class_names == ["cat", "dog", "emu"] and b.num_classes == 3
    assert len(b.y_train) + len(b.y_val) + len(b.y_test) == 30
    assert torch.bincount(b.y_test, minlength=3).tolist() == [2, 2, 2]  # 20% stratified
    # each class was painted one gray level: the pixels must still say which class it is
    for x, y in [(b.x_train, b.y_train), (b.x_test, b.y_test)]:
        expected = (40 + 80 * y).float() / 255
        torch.testing.assert_close(x.mean(dim=(1, 2, 3)), expected, atol=2 / 255, rtol=0)


def test_folder_defaults_to_rgb_32(tmp_path):
    b = load_data(f"folder:{make_image_folder(tmp_path / 'folder', per_class=5)}")
    assert b.input_shape == (3, 32, 32)


def test_folder_train_test_layout_uses_official_split(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", per_class=8)
    make_image_folder(tmp_path / "ds" / "test", per_class=3)
    b = load_data(DataConfig(name=f"folder:{tmp_path / 'ds'}", image_size=4, val_fraction=0.25))
    assert (len(b.y_train), len(b.y_val), len(b.y_test)) == (18, 6, 9)
    assert b.class_names == ["cat", "dog", "emu"]


def test_folder_train_test_class_mismatch(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", per_class=2)
    make_image_folder(tmp_path / "ds" / "test", classes=("cat", "dog"), per_class=2)
    with pytest.raises(DataError, match="test.*differ"):
        load_data(f"folder:{tmp_path / 'ds'}")


def test_folder_missing_dir(tmp_path):
    with pytest.raises(DataError, match="missing_dir.*not found"):
        load_data(f"folder:{tmp_path / 'missing_dir'}")


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="flat.*no class folders"):
        load_data(f"folder:{tmp_path / 'flat'}")


def test_folder_empty_class_is_named(tmp_path):
    root = make_image_folder(tmp_path / "folder", per_class=3)
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="zebra.*empty class folder"):
        load_data(f"folder:{root}")


@pytest.mark.parametrize("content", [b"garbage bytes", b""])
def test_folder_unreadable_image_is_named(tmp_path, content):
    root = make_image_folder(tmp_path / "folder", per_class=3)
    (root / "dog" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match="broken.png.*unreadable"):
        load_data(f"folder:{root}")


def test_folder_truncated_image_is_named(tmp_path):
    root = make_image_folder(tmp_path / "folder", per_class=3)
    good = (root / "cat" / "1.png").read_bytes()
    (root / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_data(f"folder:{root}")

"""The optional IDX downloader, exercised offline through file:// URLs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _datafiles import idx_arrays, write_idx

from frugalml.data import DataConfig, load_data
from frugalml.data.download import FASHION_MNIST_FILES, download_fashion_mnist, download_idx_files
from frugalml.errors import DataError


@pytest.fixture
def mirror(tmp_path):
    """A local folder laid out like a Fashion-MNIST mirror, and its file:// base URL."""
    src = tmp_path / "mirror"
    src.mkdir()
    for split, n, offset in [("train", 40, 0), ("t10k", 10, 10_000)]:
        x, y = idx_arrays(n, 10, 28, offset)
        write_idx(src / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(src / f"{split}-labels-idx1-ubyte.gz", y)
    return src, src.as_uri()


def test_download_then_load(mirror, tmp_path):
    src, url = mirror
    dest = tmp_path / "dest"
    paths = download_fashion_mnist(url, dest)
    assert sorted(p.name for p in paths) == sorted(FASHION_MNIST_FILES)
    for p in paths:
        assert p.read_bytes() == (src / p.name).read_bytes()
    b = load_data(DataConfig(name="fashion-mnist", root=str(dest)))
    assert b.input_shape == (1, 28, 28) and len(b.y_test) == 10 and b.class_names[1] == "Trouser"


def test_sha256_checked(mirror, tmp_path):
    src, url = mirror
    name = FASHION_MNIST_FILES[0]
    good = hashlib.sha256((src / name).read_bytes()).hexdigest()
    download_idx_files(url, tmp_path / "ok", [name], sha256={name: good})
    with pytest.raises(DataError, match=f"{name}: sha256"):
        download_idx_files(url, tmp_path / "bad", [name], sha256={name: "0" * 64})
    assert not (tmp_path / "bad" / name).exists()


def test_non_idx_payload_is_rejected_and_not_kept(mirror, tmp_path):
    src, url = mirror
    (src / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        download_fashion_mnist(url, tmp_path / "dest")
    assert not (tmp_path / "dest" / "train-labels-idx1-ubyte.gz").exists()


def test_missing_remote_file_names_url(mirror, tmp_path):
    _, url = mirror
    with pytest.raises(DataError, match="nothing-here.gz.*download failed"):
        download_idx_files(url, tmp_path / "dest", ["nothing-here.gz"])


def test_existing_files_are_kept_unless_overwrite(mirror, tmp_path):
    _, url = mirror
    dest = tmp_path / "dest"
    dest.mkdir()
    name = "t10k-labels-idx1-ubyte.gz"
    write_idx(dest / name, np.zeros(10, np.uint8))
    before = (dest / name).read_bytes()
    download_idx_files(url, dest, [name])
    assert (dest / name).read_bytes() == before
    download_idx_files(url, dest, [name], overwrite=True)
    assert (dest / name).read_bytes() != before


def test_base_url_required(tmp_path):
    with pytest.raises(DataError, match="base URL"):
        download_fashion_mnist("", tmp_path)

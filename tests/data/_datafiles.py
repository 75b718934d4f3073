"""Builders for small on-disk datasets (IDX files, image folders) used by the data tests.

A uniquely named module (not conftest) so `from _datafiles import ...` never picks up another
test folder's helpers.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    """Write a uint8 IDX file (gzipped when the name ends in .gz); `magic` overrides the header."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def idx_arrays(n: int, classes: int, size: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels encode a unique sample id (so splits can be traced back)."""
    rng = np.random.default_rng(offset)
    y = (np.arange(n) % classes).astype(np.uint8)
    x = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    x[:, 0, 0], x[:, 0, 1] = ids // 256, ids % 256
    return x, y


def make_idx_dir(
    d: Path, n_train: int = 60, n_test: int = 20, classes: int = 3, size: int = 6, gz: bool = False
) -> Path:
    """The four standard IDX files in `d`; train ids are 0.., test ids 10000.."""
    d.mkdir(parents=True)
    suffix = ".gz" if gz else ""
    x, y = idx_arrays(n_train, classes, size, 0)
    write_idx(d / f"train-images-idx3-ubyte{suffix}", x)
    write_idx(d / f"train-labels-idx1-ubyte{suffix}", y)
    x, y = idx_arrays(n_test, classes, size, 10_000)
    write_idx(d / f"t10k-images-idx3-ubyte{suffix}", x)
    write_idx(d / f"t10k-labels-idx1-ubyte{suffix}", y)
    return d


def sample_ids(x_raw) -> list[int]:
    """The ids idx_arrays wrote, read back from un-normalized [0,1] tensors."""
    px = (x_raw[:, 0, 0, :2] * 255).round().long()
    return (px[:, 0] * 256 + px[:, 1]).tolist()


def make_image_folder(root: Path, classes=("cat", "dog", "emu"), per_class: int = 10) -> Path:
    """root/<class>/<i>.png|jpg, class k filled with gray level 40 + 80k (so content is checkable)."""
    from PIL import Image

    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            size = (12 + i, 9 + k)  # varied sizes: the loader must resize
            img = Image.new("RGB", size, (40 + 80 * k,) * 3)
            img.save(root / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root

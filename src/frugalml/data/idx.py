"""MNIST-format IDX files (the format of MNIST, Fashion-MNIST, KMNIST...), gzipped or not."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from frugalml.data._source import RawDataset, register_dataset, resolve_dir
from frugalml.data.config import DataConfig
from frugalml.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dim (N,)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_idx_file(directory: Path, stem: str) -> Path:
    """`stem` or `stem.gz` inside `directory`."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}: file not found (also looked for {stem}.gz)")


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes; the array has the dims its header declares."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return parse_idx(raw, magic, path)


def parse_idx(raw: bytes, magic: int, path: str | Path) -> np.ndarray:
    """Parse IDX bytes (gunzipped first when `path` ends in .gz); `path` names the file in errors."""
    if str(path).endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip file ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: {len(raw)} bytes but header dims {list(dims)} need {expected}")
    # frombuffer shares the bytes object (read-only); reshape keeps it a view, so no extra copy
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, H, W) uint8 images and (N,) int64 labels, with matching counts."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return images[:, None], labels.astype(np.int64)


def read_idx_dir(directory: str | Path, what: str = "idx dataset") -> RawDataset:
    """The four standard IDX files of `directory` as a RawDataset (official train/test split)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"{directory}: {what} directory not found")
    paths = {key: find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    x_train, y_train = read_idx_pair(paths["train_images"], paths["train_labels"])
    x_test, y_test = read_idx_pair(paths["test_images"], paths["test_labels"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{paths['test_images']}: image size {x_test.shape[2:]} differs from train {x_train.shape[2:]}"
        )
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return RawDataset(x_train, y_train, x_test, y_test, [str(i) for i in range(num_classes)], scale=255.0)


@register_dataset("idx", takes_path=True)
def load_idx(cfg: DataConfig, arg: str | None) -> RawDataset:
    """Any directory with the four MNIST-format IDX files (train/t10k images+labels, .gz optional)."""
    return read_idx_dir(resolve_dir("idx", arg, cfg))

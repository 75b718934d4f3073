"""Image folders: DIR/<class>/*.png|jpg, or DIR/train/<class>/... + DIR/test/<class>/... (official split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frugalml.data._source import RawDataset, register_dataset, resolve_dir
from frugalml.data.config import DataConfig
from frugalml.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DEFAULT_IMAGE_SIZE = 32
DEFAULT_CHANNELS = 3


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders (expected one sub-folder of images per class)")
    return dirs


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{class_dir}: empty class folder (no {', '.join(sorted(IMAGE_SUFFIXES))} images)")
    return files


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def read_class_folders(root: Path, size: int, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x uint8 (N, C, size, size), y int64, class names) from one folder per class."""
    classes = _class_dirs(root)
    files = [(f, label) for label, d in enumerate(classes) for f in _image_files(d)]
    x = np.empty((len(files), channels, size, size), dtype=np.uint8)  # preallocated: no list of arrays
    for i, (f, _) in enumerate(files):
        x[i] = _read_image(f, size, channels)
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, [d.name for d in classes]


@register_dataset("folder", takes_path=True)
def load_folder(cfg: DataConfig, arg: str | None) -> RawDataset:
    """One sub-folder of PNG/JPEG images per class (resized to image_size, default 32; channels 1|3)."""
    root = Path(resolve_dir("folder", arg, cfg)).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    channels = cfg.channels or DEFAULT_CHANNELS
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        x_train, y_train, names = read_class_folders(train_dir, size, channels)
        x_test, y_test, test_names = read_class_folders(test_dir, size, channels)
        if test_names != names:
            raise DataError(f"{test_dir}: class folders {test_names} differ from {train_dir}: {names}")
        return RawDataset(x_train, y_train, x_test, y_test, names, scale=255.0)
    x, y, names = read_class_folders(root, size, channels)
    return RawDataset(x, y, None, None, names, scale=255.0)

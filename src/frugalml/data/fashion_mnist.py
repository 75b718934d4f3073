"""Fashion-MNIST (Zalando): 28x28 grayscale clothing images, 10 classes, 60k train / 10k test."""

from __future__ import annotations

from pathlib import Path

from frugalml.data._source import RawDataset, register_dataset
from frugalml.data.config import DataConfig
from frugalml.data.idx import read_idx_dir
from frugalml.errors import ConfigError, DataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@register_dataset("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, arg: str | None) -> RawDataset:
    """Fashion-MNIST IDX files from /usr/share/datasets/fashion-mnist or `root:` (28x28, 10 classes)."""
    if arg:
        raise ConfigError(f"dataset 'fashion-mnist' takes no ':{arg}'; set data.root to choose the directory")
    root = Path(cfg.root or DEFAULT_ROOT).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{root}: Fashion-MNIST directory not found; install Debian's dataset-fashion-mnist "
            "(apt install dataset-fashion-mnist) or pass root: with the IDX files"
        )
    raw = read_idx_dir(root, "Fashion-MNIST")
    if len(raw.class_names) > len(CLASS_NAMES):
        raise DataError(f"{root}: labels go up to {len(raw.class_names) - 1}, Fashion-MNIST has 10 classes")
    raw.class_names = list(CLASS_NAMES)
    return raw

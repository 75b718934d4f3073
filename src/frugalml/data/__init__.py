"""Datasets: `load_data(spec)` -> DataBundle of normalized train/val/test tensors.

Sources (digits, fashion-mnist, idx:DIR, folder:DIR, synthetic; text: fortunes, text:FILE) live one per module and register
in `DATASETS` with `@register_dataset(name)`; `list_datasets()` shows them.
"""

from frugalml.data._source import DATASETS, DatasetSource, RawDataset, register_dataset
from frugalml.data.bundle import DataBundle
from frugalml.data.config import DataConfig
from frugalml.data.features import Features
from frugalml.data.load import list_datasets, load_data

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "Features",
    "DatasetSource",
    "RawDataset",
    "list_datasets",
    "load_data",
    "register_dataset",
]

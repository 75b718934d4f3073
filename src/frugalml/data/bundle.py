"""The in-memory dataset bundle every part of frugalml consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class DataBundle:
    """Train/val/test splits as tensors, already normalized.

    x tensors are float32 of shape (N, C, H, W); y tensors are int64 of shape (N,).
    `input_shape` is (C, H, W) and is what model factories receive.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    # few-label data (frugalml.data.fewlabel): the unlabelled pool, and true labels kept only to measure
    # (pseudo-label precision, label-issue recall); training never reads them
    x_unlabelled: torch.Tensor | None = None
    y_unlabelled: torch.Tensor | None = None
    y_train_true: torch.Tensor | None = None  # before data.label_noise flipped some

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def loader(self, which: str, batch_size: int = 128, shuffle: bool | None = None, seed: int = 0) -> DataLoader:
        x, y = self.split(which)
        shuffle = (which == "train") if shuffle is None else shuffle
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        """A batch of real test inputs (repeated if the split is smaller), for latency and tracing."""
        x = self.x_test if len(self.x_test) else self.x_train
        reps = -(-batch_size // len(x))
        return x.repeat(reps, 1, 1, 1)[:batch_size].contiguous()

    def check_fits(self, spec: dict, what: str) -> None:
        """One line naming both shapes when this data cannot feed a model built for `spec`."""
        from frugalml.errors import DataError

        shape, classes = list(spec["input_shape"]), int(spec["num_classes"])
        if list(self.input_shape) != shape or self.num_classes != classes:
            raise DataError(
                f"{what} takes input {shape} with {classes} classes, but dataset {self.name!r} gives "
                f"{list(self.input_shape)} with {self.num_classes} classes; use the data the model was made for"
            )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            **({"unlabelled": len(self.x_unlabelled)} if self.x_unlabelled is not None else {}),
            **({"noisy_labels": int((self.y_train != self.y_train_true).sum())} if self.y_train_true is not None else {}),
        }

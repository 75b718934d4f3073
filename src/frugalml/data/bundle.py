"""The in-memory dataset bundle every part of frugalml consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from frugalml.data.features import Features

X = torch.Tensor | Features  # an image batch, or named tensors (token ids, attention mask, ...)


@dataclass
class DataBundle:
    """Train/val/test splits as tensors, already normalized.

    Images: x tensors are float32 of shape (N, C, H, W); y tensors are int64 of shape (N,);
    `input_shape` is (C, H, W) and is what model factories receive.
    Text (and any model with several inputs): x is `Features` (named tensors such as int64
    `input_ids` and `attention_mask`, (N, T)); `input_shape` is (T,).

    `task` (frugalml.measure.task) decides the quality metric: `classification` (y: int64 labels),
    `embedding` and `regression` (y: float targets (N, D); for text without targets they are the
    reference model's outputs, filled in by `measure.task.bind_reference` once the first model exists,
    and are (N, 0) until then; `num_classes` is then the output width D).
    """

    name: str
    x_train: X
    y_train: torch.Tensor
    x_val: X
    y_val: torch.Tensor
    x_test: X
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
    task: str = "classification"  # classification | embedding | regression (frugalml.measure.task)
    texts: dict[str, list[str]] | None = None  # text data: the raw strings of each split
    reference: str | None = None  # what y holds for reference-based tasks (e.g. "outputs of stage teacher")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def has_targets(self) -> bool:
        """False while a reference-based task still waits for its reference outputs."""
        return self.task == "classification" or self.y_test.ndim == 1 or self.y_test.shape[-1] > 0

    def split(self, which: str) -> tuple[X, torch.Tensor]:
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def loader(self, which: str, batch_size: int = 128, shuffle: bool | None = None, seed: int = 0) -> DataLoader:
        x, y = self.split(which)
        shuffle = (which == "train") if shuffle is None else shuffle
        gen = torch.Generator().manual_seed(seed)
        if isinstance(x, Features):
            rows = _FeatureRows(x, y)
            return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=rows.collate)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)

    def sample_input(self, batch_size: int = 1) -> X:
        """A batch of real test inputs (repeated if the split is smaller), for latency and tracing."""
        x = self.x_test if len(self.x_test) else self.x_train
        if isinstance(x, Features):
            return x.repeat_rows(batch_size)
        reps = -(-batch_size // len(x))
        return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size].contiguous()

    def check_fits(self, spec: dict, what: str) -> None:
        """One line naming both shapes when this data cannot feed a model built for `spec`."""
        from frugalml.errors import DataError

        shape, classes = list(spec["input_shape"]), int(spec["num_classes"])
        if self.task != "classification" and not self.has_targets:
            classes = self.num_classes  # no reference outputs yet: only the input shape can be checked
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
            **({"task": self.task} if self.task != "classification" else {}),
            **({"inputs": self.x_train.names} if isinstance(self.x_train, Features) else {}),
            **({"reference": self.reference} if self.reference else {}),
        }


class _FeatureRows(Dataset):
    """Row indices of named-tensor data; `collate` gathers a batch of them in one indexing."""

    def __init__(self, x: Features, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: list[int]) -> tuple[Features, torch.Tensor]:
        rows = torch.tensor(idx, dtype=torch.long)
        return self.x[rows], self.y[rows]

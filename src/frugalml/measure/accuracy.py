"""Top-1 and per-class accuracy on the test split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Predict = Callable[[torch.Tensor], Any]


def to_tensor(out: Any) -> torch.Tensor:
    """Logits from a torch model or a non-torch runtime (numpy, list of arrays) as a CPU tensor."""
    if isinstance(out, (list, tuple)):  # ONNX Runtime returns a list of outputs
        out = out[0]
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    raise TypeError(f"predict returned {type(out).__name__}; expected a tensor or numpy array of logits")


@torch.inference_mode()
def evaluate_accuracy(
    predict: Predict, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256
) -> tuple[float | None, list[float | None]]:
    """(top-1 accuracy, per-class accuracy); a class absent from `y` gets None."""
    if len(y) == 0:
        return None, [None] * num_classes
    preds = [to_tensor(predict(x[i : i + batch_size])).argmax(dim=1) for i in range(0, len(x), batch_size)]
    pred = torch.cat(preds)
    correct = (pred == y).to(torch.int64)
    per_class_total = torch.bincount(y, minlength=num_classes)
    per_class_correct = torch.bincount(y, weights=correct.double(), minlength=num_classes)
    per_class = [
        float(c / t) if t > 0 else None for c, t in zip(per_class_correct.tolist(), per_class_total.tolist())
    ]
    return float(correct.double().mean()), per_class

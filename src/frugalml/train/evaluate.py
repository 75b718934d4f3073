"""Batched inference: logits and accuracy, in eval mode, with every module's mode restored after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from frugalml.errors import DataError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; restores each submodule's own flag (some may be frozen in eval)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for all of `x`, computed `batch_size` rows at a time, returned on the CPU."""
    device = _device(model)
    with eval_mode(model), torch.inference_mode():
        if len(x) == 0:
            return model(x.to(device)).cpu()
        outs = [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on (x, y), in [0, 1]."""
    if len(y) == 0:
        raise DataError("cannot compute accuracy on an empty split")
    if len(x) != len(y):
        raise DataError(f"inputs and labels differ in length ({len(x)} vs {len(y)})")
    device = _device(model)
    correct = 0
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            pred = model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu()
            correct += int((pred == y[i : i + batch_size]).sum())
    return correct / len(y)

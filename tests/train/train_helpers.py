"""Tiny learnable data and models, built here so these tests do not depend on the data/model zoo."""

from __future__ import annotations

import torch
import torch.nn as nn

from frugalml.data.bundle import DataBundle


def make_bundle(n_train: int = 192, n_val: int = 64, classes: int = 4, seed: int = 0) -> DataBundle:
    """Class k lights up a fixed 2x2 patch of an 8x8 image on top of noise: easy, but not trivial."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes  # balanced, so chance accuracy is exactly 1/classes
        y = y[torch.randperm(n, generator=g)]
        x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
        for k in range(classes):
            r, c = 2 * (k // 2) + 2, 2 * (k % 2) + 2
            x[y == k, 0, r : r + 2, c : c + 2] += 1.5
        return x, y

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_val), split(n_val)
    return DataBundle("toy", xt, yt, xv, yv, xs, ys, classes, [f"c{k}" for k in range(classes)])


def make_model(dropout: float = 0.0, norm: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 64, 4)]
    return nn.Sequential(*layers)


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

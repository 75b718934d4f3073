"""Mixed precision: rank layers by how much accuracy keeping each one in float recovers, then keep
the most sensitive ones in float, one at a time, until the drop is within tolerance.

Sensitivities are measured with the backend's reference (uncompiled) graph on up to `LIMIT` val
samples: the ranking needs relative numbers, and one compile per trial would dominate the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from frugalml.compress.quantize.base import QuantizedModel
from frugalml.compress.quantize.select import accuracy

LIMIT = 2000
Build = Callable[[list[str]], QuantizedModel]


def _compiled(q: QuantizedModel, flag: bool) -> QuantizedModel:
    if "compiled" in vars(q):  # only backends that compile (pt2e) switch between the two graphs
        q.compiled = flag
    return q


def quantized_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def search(
    model: nn.Module, build: Build, data: Any, float_accuracy: float, tolerance: float, log: logging.Logger
) -> tuple[QuantizedModel, dict]:
    def drop(q: QuantizedModel) -> float:
        return (float_accuracy - accuracy(_compiled(q, False), data, LIMIT)) * 100

    full = build([])
    base = drop(full)
    report: dict = {"full_int8_drop_points": base, "sensitivity_points": {}, "float_layers": []}
    if base <= tolerance:
        return _compiled(full, True), report
    layers = quantized_layers(model)
    gains = {name: base - drop(build([name])) for name in layers}
    report["sensitivity_points"] = gains
    order = sorted(layers, key=lambda n: gains[n], reverse=True)
    kept: list[str] = []
    q, d = full, base
    for name in order:
        kept.append(name)
        q = build(list(kept))
        d = drop(q)
        log.info("mixed precision: %d layer(s) in float, drop %.2f points", len(kept), d)
        if d <= tolerance:
            break
    report.update(float_layers=kept, final_drop_points=d)
    return _compiled(q, True), report

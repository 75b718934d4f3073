"""Measurement-driven choices: which backend to keep (`backend: auto`), and the honest baselines
every quantized model is compared with (fp32 eager and the best fp32 runtime on this machine).

All timings come from `frugalml.measure.measure_latency` with the recipe's MeasureConfig, in the
same process and run as the stage, so candidates and references are comparable.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from frugalml.compress.quantize._common import CompiledRunner
from frugalml.errors import FrugalError

Predict = Callable[[torch.Tensor], Any]
KEEP = ("median", "p90", "mean", "min", "iterations")


def eval_split(data: Any) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Choices are made on val (test stays untouched for the report); test only if there is no val."""
    if len(data.y_val):
        return "val", data.x_val, data.y_val
    return "test", data.x_test, data.y_test


def accuracy(predict: Predict, data: Any, limit: int | None = None) -> float:
    from frugalml.measure.accuracy import evaluate_accuracy

    _, x, y = eval_split(data)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    with torch.no_grad():
        acc, _ = evaluate_accuracy(predict, x, y, data.num_classes)
    return float(acc)


def latency(predict: Predict, data: Any, mcfg: Any) -> dict[str, dict]:
    """{"b1": {median, p90, mean, min, iterations}, "b64": {...}} for every measure batch size."""
    from frugalml.measure import measure_latency

    out = {}
    for bs in mcfg.batch_sizes:
        t = measure_latency(predict, data.sample_input(bs), mcfg)
        out[f"b{bs}"] = {k: t[k] for k in KEEP}
    return out


def largest(lat: dict[str, dict]) -> str:
    return max(lat, key=lambda k: int(k[1:]))


def reference_runtimes(model: nn.Module, data: Any, names: list[str], log: logging.Logger) -> dict[str, Predict]:
    """fp32 eager plus each requested fp32 runtime that works here (a failure is logged, not fatal:
    the baseline is then simply absent from the report)."""
    from frugalml.compress.quantize import onnxrt

    float_model = copy.deepcopy(model).eval()
    runners: dict[str, Predict] = {"fp32-eager": float_model}
    for name in names:
        try:
            if name == "torch-compile":
                runner = CompiledRunner(float_model)
                runner(data.sample_input(1))  # compile now, so a failure is caught here
                runners["fp32-torch-compile"] = runner
            elif name == "onnxruntime":
                runners["fp32-onnxruntime"] = onnxrt.float_runtime(float_model, data.sample_input(2))
        except (FrugalError, RuntimeError, AssertionError) as e:  # inductor/ORT failures carry many types
            log.warning("fp32 reference %s unavailable: %s", name, str(e).splitlines()[0][:200])
    return runners


def speedups(chosen: dict[str, dict], references: dict[str, dict[str, dict]]) -> dict:
    """Speedups of the chosen model vs fp32 eager and vs the fastest fp32 runtime (at the largest
    batch size), per batch size, from medians."""
    key = largest(chosen)
    best = min(references, key=lambda r: references[r][key]["median"])

    def ratio(ref: str) -> dict[str, float]:
        return {b: references[ref][b]["median"] / chosen[b]["median"] for b in chosen if b in references[ref]}

    return {"vs_fp32_eager": ratio("fp32-eager"), "vs_best_fp32": ratio(best), "best_fp32_runtime": best}


def pick(candidates: list[dict], float_accuracy: float, tolerance: float, log: logging.Logger) -> int:
    """Index of the fastest candidate (largest batch size, median) within `tolerance` accuracy
    points of the float model; the most accurate one if none is."""
    ok = [i for i, c in enumerate(candidates) if "error" not in c]
    within = [i for i in ok if (float_accuracy - candidates[i]["accuracy"]) * 100 <= tolerance + 1e-9]
    if within:
        return min(within, key=lambda i: candidates[i]["latency_ms"][largest(candidates[i]["latency_ms"])]["median"])
    best = max(ok, key=lambda i: candidates[i]["accuracy"])
    log.warning(
        "no quantization backend stays within tolerance %.2f points of float accuracy %.4f; keeping the most "
        "accurate (%s, %.4f). Try mode: qat, mixed_precision: true or observer: histogram",
        tolerance, float_accuracy, candidates[best]["backend"], candidates[best]["accuracy"],
    )  # fmt: skip
    return best

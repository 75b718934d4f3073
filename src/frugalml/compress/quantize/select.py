"""Measurement-driven choices: which backend to keep (`backend: auto`), and the honest baselines
every quantized model is compared with (fp32 eager and the best fp32 runtime on this machine).

All timings come from `frugalml.measure.measure_latency` with the recipe's MeasureConfig, in the
same process and run as the stage, so candidates and references are comparable. A compiled
reference is compiled and warmed up at every batch size before it is timed; if it still recompiles
while timed it is not reported, and if it is more than `SLOWER_THAN_EAGER` times slower than fp32
eager it is reported with a note but never used as the best-fp32 baseline.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from frugalml.compress.quantize._runtime import CompiledRunner, first_line

Predict = Callable[[torch.Tensor], Any]
KEEP = ("median", "p90", "mean", "min", "iterations")
SLOWER_THAN_EAGER = 2.0


def _torch_compile(model: nn.Module, data: Any) -> Predict:
    return CompiledRunner(model)


def _onnxruntime(model: nn.Module, data: Any) -> Predict:
    from frugalml.compress.quantize.onnxrt import float_runtime

    return float_runtime(model, data.sample_input(2))


# fp32 runtimes a quantized model is compared with, by `references:` name
REFERENCES: dict[str, Callable[[nn.Module, Any], Predict]] = {
    "torch-compile": _torch_compile,
    "onnxruntime": _onnxruntime,
}


def eval_split(data: Any) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Choices are made on val (test stays untouched for the report); test only if there is no val."""
    if len(data.y_val):
        return "val", data.x_val, data.y_val
    return "test", data.x_test, data.y_test


def accuracy(predict: Predict, data: Any, limit: int | None = None) -> float:
    """The data's quality metric on val (test without val): top-1 accuracy for classification, the
    task's metric otherwise (embedding: mean cosine to the reference; frugalml.measure.task)."""
    from frugalml.measure.accuracy import evaluate_accuracy
    from frugalml.measure.task import task_of

    _, x, y = eval_split(data)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    task = task_of(data)
    with torch.no_grad():
        if task.name != "classification":
            return float(task.evaluate(predict, x, y, data.num_classes)["quality"])
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


def reference_latencies(
    model: nn.Module, data: Any, names: list[str], mcfg: Any, log: logging.Logger
) -> tuple[dict[str, dict], dict[str, str]]:
    """({runtime: latency}, {runtime: note}) for fp32 eager and each requested fp32 runtime that
    works here. A runtime that fails to build is noted, not fatal; one that compiled while being
    timed is noted and left out; one far slower than eager is kept but noted (see `usable`)."""
    float_model = copy.deepcopy(model).eval()
    refs = {"fp32-eager": latency(float_model, data, mcfg)}
    notes: dict[str, str] = {}
    for name in names:
        runtime = f"fp32-{name}"
        try:
            runner = REFERENCES[name](float_model, data)
            if isinstance(runner, CompiledRunner):
                runner.warm_up(data.sample_input(bs) for bs in mcfg.batch_sizes)
            compiles = getattr(runner, "compiles", 0)
            lat = latency(runner, data, mcfg)
        except Exception as e:  # inductor/ORT failures carry many types; the baseline is then absent
            log.warning("fp32 reference %s unavailable: %s", name, first_line(e))
            notes[runtime] = f"unavailable: {first_line(e)}"
            continue
        if getattr(runner, "compiles", 0) != compiles:
            notes[runtime] = "recompiled while being timed; not reported"
            log.warning("fp32 reference %s %s", name, notes[runtime])
            continue
        refs[runtime] = lat
    notes.update(slow_references(refs))
    return refs, notes


def slow_references(refs: dict[str, dict]) -> dict[str, str]:
    """{runtime: note} for references more than SLOWER_THAN_EAGER times slower than fp32 eager at
    some batch size: a baseline like that (e.g. a compiled graph that kept recompiling) would turn
    into an absurd speedup."""
    eager = refs["fp32-eager"]
    notes = {}
    for name, lat in refs.items():
        ratios = {
            b: lat[b]["median"] / eager[b]["median"] for b in lat if b in eager and eager[b]["median"] > 0
        }
        worst = max(ratios, key=ratios.__getitem__, default=None)
        if worst is not None and ratios[worst] > SLOWER_THAN_EAGER:
            notes[name] = (
                f"{ratios[worst]:.1f}x slower than fp32 eager at {worst} ({lat[worst]['median']:.3g} vs "
                f"{eager[worst]['median']:.3g} ms); not used as the best-fp32 baseline"
            )
    return notes


def speedups(
    chosen: dict[str, dict], references: dict[str, dict[str, dict]], notes: dict[str, str] | None = None
) -> dict:
    """Speedups of the chosen model vs fp32 eager and vs the fastest fp32 runtime *at each batch size*
    (a noted reference never counts: the best at batch 1 is often another runtime than at batch 64),
    from medians. `best_fp32_runtime` names the best per batch size."""
    usable = [r for r in references if r == "fp32-eager" or r not in (notes or {})]
    best: dict[str, str] = {}
    for b in chosen:
        timed = [r for r in usable if b in references[r]]
        if timed:
            best[b] = min(timed, key=lambda r: references[r][b]["median"])

    def ratio(ref_of: Callable[[str], str | None]) -> dict[str, float]:
        out = {}
        for b in chosen:
            ref = ref_of(b)
            if ref is not None and b in references.get(ref, {}):
                out[b] = references[ref][b]["median"] / chosen[b]["median"]
        return out

    return {"vs_fp32_eager": ratio(lambda b: "fp32-eager"), "vs_best_fp32": ratio(best.get),
            "best_fp32_runtime": best}


def pick(candidates: list[dict], float_accuracy: float, tolerance: float, log: logging.Logger,
         batch: int | None = None) -> int:
    """Index of the fastest candidate (median at `batch`, default the largest measured batch size)
    within `tolerance` accuracy points of the float model; the most accurate one if none is."""
    ok = [i for i, c in enumerate(candidates) if "error" not in c]
    within = [i for i in ok if (float_accuracy - candidates[i]["accuracy"]) * 100 <= tolerance + 1e-9]
    if within:
        def median(i: int) -> float:
            lat = candidates[i]["latency_ms"]
            return lat[f"b{batch}" if batch and f"b{batch}" in lat else largest(lat)]["median"]

        return min(within, key=median)
    best = max(ok, key=lambda i: candidates[i]["accuracy"])
    log.warning(
        "no quantization backend stays within tolerance %.2f points of float accuracy %.4f; keeping the most "
        "accurate (%s, %.4f). Try mode: qat, mixed_precision: true or observer: histogram",
        tolerance,
        float_accuracy,
        candidates[best]["backend"],
        candidates[best]["accuracy"],
    )
    return best

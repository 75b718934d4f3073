"""`measure()`: every number frugalml reports about a model comes from here.

The model is never mutated: modules are put in eval mode for the duration and each module's
training flag is restored after; hooks are removed; dtype and device are left alone (inputs are
moved to the model instead). A `predict` callable replaces the model for accuracy, latency and
memory, so other runtimes (ONNX Runtime) are measured the same way; structural numbers (params,
MACs) still come from `model` when one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.measure.accuracy import evaluate_accuracy
from frugalml.measure.config import MeasureConfig
from frugalml.measure.cost import count_flops, count_params
from frugalml.measure.energy import energy_per_sample
from frugalml.measure.env import use_threads
from frugalml.measure.latency import LATENCY_KEYS, measure_latency
from frugalml.measure.memory import peak_memory
from frugalml.measure.roofline import peak_gemm_gflops
from frugalml.measure.size import size_metrics, weights_bytes
from frugalml.measure.task import task_of


@contextmanager
def _eval_mode(model: nn.Module | None):
    flags = [(m, m.training) for m in model.modules()] if model is not None else []
    try:
        if model is not None:
            model.eval()
        yield
    finally:
        for m, training in flags:
            m.training = training


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """Where the model's inputs must go: its device, and its dtype when it runs in half precision."""
    ref = next((t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None)
    if ref is None:
        return torch.device("cpu"), None
    return ref.device, ref.dtype if ref.dtype in (torch.float16, torch.bfloat16) else None


def place(x: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """`x` on the model's device; floating inputs in its half precision. Integer inputs (token ids,
    masks) are never cast: fp16 holds integers exactly only up to 2048."""
    if dtype is None or (isinstance(x, torch.Tensor) and not x.is_floating_point()):
        return x.to(device)
    return x.to(device=device, dtype=dtype)  # Features casts its floating tensors only


def _model_runner(model: nn.Module) -> Callable[[Any], torch.Tensor]:
    """The model as a `predict` callable."""
    device, dtype = _placement(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run(x: Any) -> torch.Tensor:
        out = model(place(x, device, dtype))
        if sync is not None:
            sync()  # otherwise latency would time the kernel launch, not the work
        return out

    return run


def measure(
    model: nn.Module | None,
    data: Any,
    cfg: MeasureConfig | None = None,
    *,
    files: Sequence[Path] | None = None,
    runtime: str = "torch-eager",
    predict: Callable[[torch.Tensor], Any] | None = None,
) -> dict:
    """Accuracy, cost, size, latency, memory, energy and roofline numbers of one model on `data`
    (a frugalml DataBundle). Keys as in ARCHITECTURE.md's results.json; unknowable ones are None.
    `files`: the artifact's files, whose bytes are its size (else the state_dict's, in memory)."""
    cfg = cfg or MeasureConfig()
    if model is None and predict is None:
        raise ValueError("measure() needs a model, a predict callable, or both")
    with use_threads(cfg.threads) as threads, _eval_mode(model), torch.no_grad():
        run = predict if predict is not None else _model_runner(model)
        out: dict[str, Any] = {}

        acc, per_class = (None, None)
        task = task_of(data)
        if cfg.accuracy and task.name == "classification":
            acc, per_class = evaluate_accuracy(run, data.x_test, data.y_test, data.num_classes)
            out.update(quality=acc, quality_metric="accuracy")
        elif cfg.accuracy:  # embedding / regression: the task's metrics (cosine, recall@10, r2, ...)
            out.update(task.evaluate(run, data.x_test, data.y_test, data.num_classes))
        out["accuracy"], out["per_class_accuracy"] = acc, per_class
        out["task"] = task.name

        if model is not None:
            params, nonzero = count_params(model)
            device, dtype = _placement(model)
            cost = count_flops(model, place(data.sample_input(1), device, dtype))
        else:
            params = nonzero = None
            cost = {"flops": None, "macs": None, "flops_method": None}
        out.update(params=params, nonzero_params=nonzero, macs=cost["macs"], flops=cost["flops"])
        out["flops_method"] = cost["flops_method"]

        out.update(size_metrics(model, files))

        timings = {bs: measure_latency(run, data.sample_input(bs), cfg) for bs in cfg.batch_sizes}
        out["latency_ms"] = {f"b{bs}": {k: t[k] for k in LATENCY_KEYS} for bs, t in timings.items()}
        largest = max(timings)
        out["throughput_sps"] = largest / (timings[largest]["median"] / 1000.0)

        # another runtime holds its own copy of the weights: the artifact's bytes are the best proxy
        weights = weights_bytes(model) if predict is None else out["size_bytes"]
        out.update(peak_memory(run, data.sample_input(largest), weights, torch_model=predict is None))

        out["runtime"] = runtime
        out["threads"] = threads
        out["energy_mj_per_sample"] = energy_per_sample(timings[largest], largest, cfg.watts_per_core)

        flops = out["flops"]
        out["achieved_gflops"] = flops * out["throughput_sps"] / 1e9 if flops else None
        out["peak_gemm_gflops"] = peak_gemm_gflops(threads) if cfg.roofline else None
        out["pct_of_peak_gflops"] = (
            100.0 * out["achieved_gflops"] / out["peak_gemm_gflops"]
            if out["achieved_gflops"] is not None and out["peak_gemm_gflops"]
            else None
        )
    return out

"""The `quantize` verb and its stage handler: build one quantized model per candidate backend,
measure each (val accuracy, latency) and keep the best; time the fp32 baselines in the same run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.nn as nn

from frugalml.compress.quantize import cast, onnxrt, pt2e, torch_ao, weight_only
from frugalml.compress.quantize._common import QuantizedModel, calibration_batches, check_data_fits
from frugalml.compress.quantize.config import QuantizeStage
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.stages import StageContext, register_stage

# candidates in the order tried; `auto` measures all that apply (qat: training twice would double
# its cost, so auto uses pt2e, the backend torch.ao is deprecated in favour of)
BACKENDS = {
    "static": ["pt2e", "torch", "onnxruntime"],
    "dynamic": ["torch", "onnxruntime", "pt2e"],
    "qat": ["pt2e"],
    "weight-only": ["torch"],
    "fp16": ["torch"],
    "bf16": ["torch"],
}


def require(backend: str) -> None:
    """One line naming what is missing, before any work is done."""
    import importlib.util
    import os
    import shutil

    if backend == "pt2e":
        if importlib.util.find_spec("torchao") is None:
            raise UnsupportedError("backend pt2e needs torchao (pip install torchao); or use backend torch")
        if not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++"))):
            raise UnsupportedError(
                "backend pt2e runs through torch.compile, which needs a C++ compiler (install g++ or set CXX); "
                "or use backend onnxruntime"
            )
    elif backend == "onnxruntime":
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                raise UnsupportedError(f"backend onnxruntime needs {module} (pip install {module}); or use backend torch")
    elif backend == "torch":
        torch_ao.use_x86_engine()


def recipe_of(cfg: QuantizeStage, backend: str, float_layers: list[str] | None = None) -> dict:
    """What is needed to rebuild the quantized model on load (saved in model.json)."""
    recipe = {"mode": cfg.mode, "backend": backend, "per_channel": cfg.per_channel, "fuse": cfg.fuse}
    if cfg.mode == "static":
        recipe.update(observer=cfg.observer, percentile=cfg.percentile, calibration_batches=cfg.calibration_batches)
    if cfg.mode == "weight-only":
        recipe.update(bits=cfg.bits, group_size=cfg.group_size)
    if float_layers:
        recipe["float_layers"] = list(float_layers)
    return recipe


def build(model: nn.Module, cfg: QuantizeStage, backend: str, data: Any, *, float_layers: list[str] | None = None,
          train: Any = None, workdir: Path | None = None, resume: bool = False,
          log: logging.Logger) -> QuantizedModel:  # fmt: skip
    """One quantized model: `cfg.mode` on `backend`."""
    recipe = recipe_of(cfg, backend, float_layers)
    if cfg.mode in ("static", "dynamic", "qat"):
        require(backend)
    if not cfg.fuse and backend in ("pt2e", "onnxruntime"):
        raise UnsupportedError(f"backend {backend} always folds BatchNorm into convs; fuse: false needs backend torch")
    mode = cfg.mode
    if mode in ("fp16", "bf16"):
        return cast.cast(model, recipe)
    if mode == "weight-only":
        return weight_only.quantize_weight_only(model, recipe)
    if mode == "qat":
        from frugalml.compress.quantize.qat import run_qat

        return run_qat(model, cfg, backend, recipe, data, train=train, workdir=workdir, resume=resume, log=log)
    if mode == "static":
        batches = calibration_batches(data, cfg.calibration_batches, cfg.calibration_batch_size)
        quantize_static = {"pt2e": pt2e, "torch": torch_ao, "onnxruntime": onnxrt}[backend].quantize_static
        return quantize_static(model, recipe, batches)
    example = data.sample_input(cfg.calibration_batch_size) if data is not None else None
    if backend == "torch":
        return torch_ao.quantize_dynamic(model, recipe)
    if example is None:
        raise ConfigError(f"dynamic quantization on backend {backend} needs data to trace the model with")
    return (pt2e if backend == "pt2e" else onnxrt).quantize_dynamic(model, recipe, example)


def _build_candidate(model: nn.Module, cfg: QuantizeStage, backend: str, data: Any, float_accuracy: float | None,
                     log: logging.Logger, **kw: Any) -> QuantizedModel:  # fmt: skip
    if not cfg.mixed_precision:
        return build(model, cfg, backend, data, log=log, **kw)
    if backend == "onnxruntime":
        raise UnsupportedError("mixed_precision runs on backend pt2e or torch, not onnxruntime")
    from frugalml.compress.quantize.mixed import search

    def build_with(float_layers: list[str]) -> QuantizedModel:
        return build(model, cfg, backend, data, float_layers=float_layers, log=log, **kw)

    q, report = search(model, build_with, data, float_accuracy, cfg.tolerance, log)
    q.frugal_report["mixed_precision"] = report
    return q


def quantize(model: nn.Module, cfg: QuantizeStage, data: Any = None, *, log: logging.Logger | None = None,
             workdir: str | Path | None = None, measure: Any = None, train: Any = None, spec: dict | None = None,
             resume: bool = False) -> QuantizedModel:  # fmt: skip
    """Quantize `model` as `cfg` says. Returns a QuantizedModel whose `frugal_report` holds the
    candidates, the fp32 reference latencies and the speedups (measured with `measure`, a
    MeasureConfig; default MeasureConfig()). `train` (a TrainConfig) is the base of QAT fine-tuning."""
    from frugalml.compress.quantize import select

    log = log or logging.getLogger("frugalml.quantize")
    if isinstance(model, QuantizedModel):
        raise UnsupportedError(
            f"the model is already quantized ({model.frugal_runtime}); quantize the float model instead"
        )
    model = model.eval()
    backends = BACKENDS[cfg.mode] if cfg.backend == "auto" else [cfg.backend]
    needs_data = cfg.mode in ("static", "qat") or len(backends) > 1 or cfg.mixed_precision
    if data is None and needs_data:
        raise ConfigError(f"quantize mode {cfg.mode!r} with backend {cfg.backend!r} needs data (calibration/val)")
    if data is not None:
        check_data_fits(model, spec, data)
    if measure is None and data is not None:
        from frugalml.measure import MeasureConfig

        measure = MeasureConfig()
    float_accuracy = select.accuracy(model, data) if data is not None else None

    candidates: list[dict] = []
    built: list[QuantizedModel | None] = []
    for backend in backends:
        try:
            q = _build_candidate(model, cfg, backend, data, float_accuracy, log, train=train,
                                 workdir=Path(workdir) if workdir else None, resume=resume)  # fmt: skip
        except UnsupportedError as e:
            if cfg.backend != "auto":
                raise
            log.info("backend %s skipped: %s", backend, e)
            candidates.append({"backend": backend, "error": str(e), "chosen": False})
            built.append(None)
            continue
        entry: dict[str, Any] = {"backend": backend, "runtime": q.frugal_runtime, "chosen": False}
        if data is not None:
            entry["accuracy"] = select.accuracy(q, data)
            entry["latency_ms"] = select.latency(q, data, measure)
        candidates.append(entry)
        built.append(q)
    if all(q is None for q in built):
        reasons = "; ".join(f"{c['backend']}: {c['error']}" for c in candidates)
        raise UnsupportedError(f"no backend can quantize {type(model).__name__} with mode {cfg.mode!r} ({reasons})")

    if data is None:
        index = next(i for i, q in enumerate(built) if q is not None)
        candidates[index]["chosen"] = True
        chosen = built[index]
        assert chosen is not None
        chosen.frugal_report.update(candidates=candidates)
        return chosen

    index = select.pick(candidates, float_accuracy, cfg.tolerance, log)
    candidates[index]["chosen"] = True
    chosen = built[index]
    assert chosen is not None
    references = {
        name: select.latency(runner, data, measure)
        for name, runner in select.reference_runtimes(model, data, list(cfg.references), log).items()
    }
    split = select.eval_split(data)[0]
    chosen.frugal_report.update(
        candidates=candidates,
        reference_latency_ms=references,
        speedup=select.speedups(candidates[index]["latency_ms"], references),
        float_accuracy={split: float_accuracy},
    )
    log.info("quantize: kept backend %s (%s); speedup %s", candidates[index]["backend"], chosen.frugal_runtime,
             chosen.frugal_report["speedup"])  # fmt: skip
    return chosen


@register_stage(QuantizeStage)
def quantize_stage(model: nn.Module, cfg: QuantizeStage, ctx: StageContext) -> nn.Module:
    q = quantize(model, cfg, ctx.data, log=ctx.log, workdir=ctx.stage_dir / "work", measure=ctx.measure_config,
                 train=ctx.train_defaults, spec=ctx.model_spec, resume=ctx.resume)  # fmt: skip
    ctx.extra_metrics.update(q.frugal_report)
    ctx.artifact_meta.update(format=q.format, runtime=q.frugal_runtime)
    return q

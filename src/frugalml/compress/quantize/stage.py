"""The `quantize` verb and its stage handler: build one quantized model per candidate backend,
measure each (val accuracy, latency) and keep the best; time the fp32 baselines in the same run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.nn as nn

from frugalml.compress.quantize import select
from frugalml.compress.quantize._runtime import first_line
from frugalml.compress.quantize.base import QuantizeContext, QuantizedModel, check_data_fits
from frugalml.compress.quantize.config import QuantizeStage
from frugalml.compress.quantize.qat import qat_train_config
from frugalml.compress.quantize.registry import MODES, backends_for, get_backend
from frugalml.errors import ConfigError, FrugalError, UnsupportedError
from frugalml.stages import StageContext, register_stage


def settings_of(cfg: QuantizeStage, backend: str, float_layers: list[str] | None = None) -> dict:
    """What is needed to rebuild the quantized model on load (saved in model.json as `quantization`)."""
    settings = {"mode": cfg.mode, "backend": backend, "per_channel": cfg.per_channel, "fuse": cfg.fuse}
    if cfg.mode == "static":
        settings.update(
            observer=cfg.observer, percentile=cfg.percentile, calibration_batches=cfg.calibration_batches
        )
    if cfg.mode == "weight-only":
        settings.update(bits=cfg.bits, group_size=cfg.group_size)
    if cfg.mode == "codebook":
        settings.update(bits=cfg.bits, layer_bits=cfg.layer_bits, fold_batchnorm=cfg.fold_batchnorm,
                        half_floats=cfg.half_floats)
    if float_layers:
        settings["float_layers"] = list(float_layers)
    if cfg.smooth is not None:
        settings["smooth"] = cfg.smooth
    return settings


def context(
    cfg: QuantizeStage,
    data: Any,
    *,
    train: Any = None,
    workdir: str | Path | None = None,
    resume: bool = False,
    log: logging.Logger | None = None,
) -> QuantizeContext:
    """The QuantizeContext for `cfg`: QAT's TrainConfig is merged (and validated) here, before any work."""
    tcfg = (
        qat_train_config(train, cfg.qat, f"stages.{cfg.name or cfg.kind}.qat.overrides")
        if cfg.mode in ("qat", "codebook")
        else None
    )
    return QuantizeContext(
        data=data,
        calibration_batches=cfg.calibration_batches,
        calibration_batch_size=cfg.calibration_batch_size,
        train=tcfg,
        distill=cfg.qat.distill,  # > 0 only in modes qat and codebook (QuantizeStage rejects it elsewhere)
        temperature=cfg.qat.temperature,
        workdir=Path(workdir) if workdir is not None else None,
        resume=resume,
        log=log or logging.getLogger("frugalml.quantize"),
    )


def build(
    model: nn.Module,
    cfg: QuantizeStage,
    backend: str,
    ctx: QuantizeContext,
    float_layers: list[str] | None = None,
) -> QuantizedModel:
    """One quantized model: `cfg.mode` on `backend`."""
    impl = get_backend(cfg.mode, backend)
    impl.require()
    if not cfg.fuse and not impl.keeps_batchnorm:
        raise UnsupportedError(
            f"backend {backend} always folds BatchNorm into convs; fuse: false needs backend torch"
        )
    if cfg.smooth is not None and not impl.smooths:
        raise UnsupportedError(f"smooth (SmoothQuant) is implemented for backend onnxruntime, not {backend}")
    if float_layers is not None and not impl.keeps_float_layers:
        raise UnsupportedError(f"mixed_precision needs a backend that keeps layers in float, not {backend}")
    return MODES[cfg.mode].build(impl, model, settings_of(cfg, backend, float_layers), ctx)


def _build_candidate(
    model: nn.Module, cfg: QuantizeStage, backend: str, ctx: QuantizeContext, float_accuracy: float | None
) -> QuantizedModel:
    if not cfg.mixed_precision:
        return build(model, cfg, backend, ctx)
    from frugalml.compress.quantize.mixed import search

    def build_with(float_layers: list[str]) -> QuantizedModel:
        return build(model, cfg, backend, ctx, float_layers)

    q, report = search(model, build_with, ctx.data, float_accuracy, cfg.tolerance, ctx.log)
    q.frugal_report["mixed_precision"] = report
    return q


def _candidate(
    model: nn.Module,
    cfg: QuantizeStage,
    backend: str,
    ctx: QuantizeContext,
    float_accuracy: float | None,
    measure: Any,
) -> tuple[dict, QuantizedModel | None]:
    """Build and evaluate one backend: (candidates entry, model). With `backend: auto` a failure at
    any step is recorded in the entry (the other candidates go on); otherwise it is one error line."""
    entry: dict[str, Any] = {"backend": backend, "chosen": False}
    step = "build"
    try:
        q = _build_candidate(model, cfg, backend, ctx, float_accuracy)
        entry["runtime"] = q.frugal_runtime
        if ctx.data is not None:
            step = "evaluation"
            entry["accuracy"] = select.accuracy(q, ctx.data)
            entry["latency_ms"] = select.latency(q, ctx.data, measure)
        return entry, q
    except Exception as e:  # backends raise many library types; each becomes one recorded reason
        reason = str(e) if isinstance(e, FrugalError) else f"{first_line(e)} (during {step})"
        if cfg.backend != "auto":
            if isinstance(e, FrugalError):
                raise
            raise UnsupportedError(
                f"backend {backend} cannot {cfg.mode}-quantize {type(model).__name__}: {reason}; try backend: auto"
            ) from e
        ctx.log.info("backend %s failed: %s", backend, reason)
        ctx.log.debug("backend %s failure", backend, exc_info=True)
        entry["error"] = reason
        return entry, None


def quantize(
    model: nn.Module,
    cfg: QuantizeStage,
    data: Any = None,
    *,
    log: logging.Logger | None = None,
    workdir: str | Path | None = None,
    measure: Any = None,
    train: Any = None,
    spec: dict | None = None,
    resume: bool = False,
) -> QuantizedModel:
    """Quantize `model` as `cfg` says. Returns a QuantizedModel whose `frugal_report` holds the
    candidates, the fp32 reference latencies and the speedups (measured with `measure`, a
    MeasureConfig; default MeasureConfig()). `train` (a TrainConfig) is the base of QAT fine-tuning."""
    if isinstance(model, QuantizedModel):
        raise UnsupportedError(
            f"the model is already quantized ({model.frugal_runtime}); quantize the float model it was made "
            "from (in a recipe: set this stage's parent to the float stage)"
        )
    mode = MODES[cfg.mode]
    names = [b.name for b in backends_for(cfg.mode)] if cfg.backend == "auto" else [cfg.backend]
    if data is None and cfg.qat.distill > 0 and cfg.mode == "codebook":
        raise ConfigError("quantize mode 'codebook' with qat.distill > 0 needs data: the centroids are "
                          "fine-tuned (and distilled) on its training split")
    if data is None and (mode.needs_data or len(names) > 1 or cfg.mixed_precision or cfg.smooth is not None):
        raise ConfigError(
            f"quantize mode {cfg.mode!r} with backend {cfg.backend!r} needs data (calibration/val)"
        )
    ctx = context(cfg, data, train=train, workdir=workdir, resume=resume, log=log)
    model = model.eval()
    float_accuracy = None
    if data is not None:
        check_data_fits(model, spec, data)
        float_accuracy = select.accuracy(model, data)
        if measure is None:
            from frugalml.measure import MeasureConfig

            measure = MeasureConfig()

    candidates: list[dict] = []
    built: list[QuantizedModel | None] = []
    for name in names:
        entry, q = _candidate(model, cfg, name, ctx, float_accuracy, measure)
        candidates.append(entry)
        built.append(q)
        if q is not None and mode.trains:
            break  # training again on another backend would double the cost: keep the first that works
    if all(q is None for q in built):
        reasons = "; ".join(f"{c['backend']}: {c['error']}" for c in candidates)
        raise UnsupportedError(
            f"no backend can quantize {type(model).__name__} with mode {cfg.mode!r} ({reasons})"
        )

    if data is None:
        index = next(i for i, q in enumerate(built) if q is not None)
    else:
        index = select.pick(candidates, float_accuracy, cfg.tolerance, ctx.log, cfg.batch)
    candidates[index]["chosen"] = True
    chosen = built[index]
    assert chosen is not None
    chosen.frugal_report["candidates"] = candidates
    spec = getattr(model, "frugal_spec", None)
    if spec is not None:  # frugalml.save(chosen, dir) then rebuilds the float skeleton it needs
        chosen.frugal_spec = {**spec, **chosen.spec_changes}
    if data is not None:
        _report_baselines(chosen, model, cfg, data, measure, float_accuracy, ctx.log)
    return chosen


def _report_baselines(
    chosen: QuantizedModel,
    model: nn.Module,
    cfg: QuantizeStage,
    data: Any,
    measure: Any,
    float_accuracy: float,
    log: logging.Logger,
) -> None:
    entry = next(c for c in chosen.frugal_report["candidates"] if c["chosen"])
    refs, notes = select.reference_latencies(model, data, list(cfg.references), measure, log)
    report = chosen.frugal_report
    report.update(
        reference_latency_ms=refs,
        speedup=select.speedups(entry["latency_ms"], refs, notes),
        float_accuracy={select.eval_split(data)[0]: float_accuracy},
    )
    if notes:
        report["reference_notes"] = notes
        report["warnings"] = [f"reference {name}: {note}" for name, note in notes.items()]
    log.info(
        "quantize: kept backend %s (%s); speedup %s",
        entry["backend"],
        chosen.frugal_runtime,
        report["speedup"],
    )


@register_stage(QuantizeStage)
def quantize_stage(model: nn.Module, cfg: QuantizeStage, ctx: StageContext) -> nn.Module:
    q = quantize(
        model,
        cfg,
        ctx.data,
        log=ctx.log,
        workdir=ctx.workdir,
        measure=ctx.measure_config,
        train=ctx.train_defaults,
        spec=ctx.model_spec,
        resume=ctx.resume,
    )
    ctx.extra_metrics.update(q.frugal_report)
    if q.spec_changes:
        ctx.model_spec = {**ctx.model_spec, **q.spec_changes}
    ctx.artifact_meta.update(format=q.format, runtime=q.frugal_runtime)
    return q

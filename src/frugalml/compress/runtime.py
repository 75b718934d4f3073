"""The `runtime` stage: how the parent model should run here, chosen by measurement.

The deployable result of a stage may be an fp32 runtime, not a quantized one: on small models an
fp32 graph in ONNX Runtime can beat int8 in torch, and at batch 1 dispatch overhead decides more than
arithmetic. So this stage builds every candidate that applies — fp32 eager, torch.compile, ONNX
Runtime fp32, bf16, static int8 (every backend, as `quantize` does), and torch's CSR kernels for
Linear layers sparse enough to gain from them — measures accuracy on val and latency at the
measure batch sizes, and keeps the fastest at `batch` within `tolerance` points of the float model.
Every candidate, with its numbers or the reason it failed, is in the stage metrics.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field

from frugalml import artifact
from frugalml.compress.quantize import select
from frugalml.compress.quantize._runtime import CompiledRunner, first_line
from frugalml.compress.quantize.base import QuantizedModel, SafeTensors, float_skeleton, read_tensors
from frugalml.errors import ConfigError, FrugalError
from frugalml.stages import StageConfig, StageContext, register_stage

Candidate = Literal["eager", "torch-compile", "onnxruntime", "bf16", "int8", "sparse"]
TENSORS = "model.safetensors"
SPARSE_MIN = 0.7  # a Linear layer joins the CSR candidate at this fraction of zeros (dense wins below)


class RuntimeStage(StageConfig):
    """Keep the fastest way to run the parent model on this machine (fp32, bf16 or int8 runtimes, CSR
    kernels for sparse Linear layers) within `tolerance` points of its accuracy, by measurement."""

    kind: Literal["runtime"] = "runtime"
    candidates: list[Candidate] = Field(
        default_factory=lambda: ["eager", "torch-compile", "onnxruntime", "bf16", "int8", "sparse"],
        description="runtimes to build and measure (those that do not apply are skipped with the reason)",
    )
    batch: int | None = Field(
        None, ge=1, description="the batch size whose median latency decides (one of measure.batch_sizes); "
        "default: the largest"
    )
    tolerance: float = Field(0.5, ge=0, description="allowed val-accuracy drop in points vs the float model")
    calibration_batches: int = Field(8, ge=1, description="for the int8 candidate")

    def trains(self) -> bool:
        return False  # it builds and times runtimes of its parent


class CompiledModel(QuantizedModel):
    """The fp32 model under torch.compile (inductor, frozen weights); stored as its fp32 weights."""

    format = "torch-compiled"

    def __init__(self, module: nn.Module) -> None:
        super().__init__("torch-compile-fp32", module, {"mode": "fp32"})
        self.module = module
        self._runner = CompiledRunner(module)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        return {TENSORS: SafeTensors({k: v.detach().clone() for k, v in self.module.state_dict().items()})}, {}


class CSRLinear(nn.Module):
    """A Linear layer computed with torch's sparse CSR kernel: y = (W_csr @ x^T)^T + b."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        with warnings.catch_warnings():  # "sparse CSR support is in beta": measured here, not assumed
            warnings.simplefilter("ignore")
            self.weight_csr = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight_csr, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class SparseModel(QuantizedModel):
    """The fp32 model with its sparse Linear layers on CSR kernels; stored as its fp32 weights."""

    format = "torch-sparse-csr"

    def __init__(self, float_model: nn.Module, layers: list[str]) -> None:
        super().__init__("torch-sparse-csr", float_model, {"mode": "fp32", "csr_layers": layers})
        self.module = copy.deepcopy(float_model).eval()
        for name in layers:
            parent, _, leaf = name.rpartition(".")
            owner = self.module.get_submodule(parent) if parent else self.module
            setattr(owner, leaf, CSRLinear(getattr(owner, leaf)))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        state = self.frugal_cost_model.state_dict()
        return {TENSORS: SafeTensors({k: v.detach().clone() for k, v in state.items()})}, {}


def sparse_linear_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and float((m.weight == 0).float().mean()) >= SPARSE_MIN]


def _fp32_model(directory: Path, info: dict, trust_code: artifact.Trust) -> nn.Module:
    model = float_skeleton(info, directory, trust_code)
    return artifact.load_state(model, read_tensors(directory, TENSORS), info, directory)


def _load_compiled(directory: Path, info: dict, trust_code: artifact.Trust = False) -> CompiledModel:
    return CompiledModel(_fp32_model(directory, info, trust_code))


def _load_sparse(directory: Path, info: dict, trust_code: artifact.Trust = False) -> SparseModel:
    layers = (info.get("quantization") or {}).get("csr_layers") or []
    return SparseModel(_fp32_model(directory, info, trust_code), list(layers))


def _save(model: nn.Module, directory: Path, spec: dict, meta: dict) -> Path:
    return model.save(directory, spec, meta)


artifact.register_format(CompiledModel.format, _save, _load_compiled)
artifact.register_format(SparseModel.format, _save, _load_sparse)


# --- building and choosing --------------------------------------------------------------------------------


def _builders(cfg: RuntimeStage, data: Any, ctx: StageContext) -> dict[str, Callable[[nn.Module], nn.Module]]:
    from frugalml.compress.quantize import QuantizeStage, quantize
    from frugalml.compress.quantize.onnxrt import float_runtime

    def int8(model: nn.Module) -> nn.Module:
        q = quantize(model, QuantizeStage(mode="static", backend="auto", calibration_batches=cfg.calibration_batches,
                                          tolerance=cfg.tolerance, references=[], batch=cfg.batch),
                     data, log=ctx.log, measure=ctx.measure_config, spec=ctx.model_spec)
        return q

    def bf16(model: nn.Module) -> nn.Module:
        return quantize(model, QuantizeStage(mode="bf16", references=[]), None, log=ctx.log, spec=ctx.model_spec)

    def sparse(model: nn.Module) -> nn.Module:
        layers = sparse_linear_layers(model)
        if not layers:
            raise ConfigError(f"no Linear layer has {SPARSE_MIN:.0%} zeros or more (CSR kernels lose below that)")
        return SparseModel(model, layers)

    return {
        "eager": lambda m: m,
        "torch-compile": CompiledModel,
        "onnxruntime": lambda m: float_runtime(m, data.sample_input(2)),
        "bf16": bf16,
        "int8": int8,
        "sparse": sparse,
    }


def choose_runtime(model: nn.Module, cfg: RuntimeStage, ctx: StageContext) -> tuple[nn.Module, dict]:
    data, mcfg, log = ctx.data, ctx.measure_config, ctx.log
    if mcfg is None:
        from frugalml.measure import MeasureConfig

        mcfg = MeasureConfig()
    key = f"b{cfg.batch}" if cfg.batch else f"b{max(mcfg.batch_sizes)}"
    if cfg.batch and cfg.batch not in mcfg.batch_sizes:
        raise ConfigError(f"stages.{cfg.name}.batch: {cfg.batch} is not measured; measure.batch_sizes are "
                          f"{mcfg.batch_sizes}")
    model = model.eval()  # as quantize(): a model measured in train mode would move its BatchNorm statistics
    float_accuracy = select.accuracy(model, data)
    builders = _builders(cfg, data, ctx)
    entries, built = [], []
    for name in cfg.candidates:
        entry: dict[str, Any] = {"candidate": name, "chosen": False}
        try:
            candidate = builders[name](copy.deepcopy(model).eval() if name != "eager" else model)
            if isinstance(candidate, CompiledModel):
                candidate._runner.warm_up(data.sample_input(b) for b in mcfg.batch_sizes)
            entry["runtime"] = getattr(candidate, "frugal_runtime", "torch-eager")
            entry["accuracy"] = select.accuracy(candidate, data)
            entry["latency_ms"] = select.latency(candidate, data, mcfg)
        except (FrugalError, RuntimeError, ValueError, TypeError, AssertionError) as e:
            entry["error"] = str(e) if isinstance(e, FrugalError) else f"{type(e).__name__}: {first_line(e)}"
            log.info("runtime %s skipped: %s", name, entry["error"])
            log.debug("runtime %s", name, exc_info=True)
            candidate = None
        entries.append(entry)
        built.append(candidate)
    ok = [i for i, e in enumerate(entries) if "error" not in e]
    if not ok:
        raise ConfigError(f"stages.{cfg.name}: no runtime candidate works here: "
                          + "; ".join(f"{e['candidate']}: {e['error']}" for e in entries))
    within = [i for i in ok if (float_accuracy - entries[i]["accuracy"]) * 100 <= cfg.tolerance + 1e-9]
    pool = within or [max(ok, key=lambda i: entries[i]["accuracy"])]
    index = min(pool, key=lambda i: entries[i]["latency_ms"][key]["median"])
    entries[index]["chosen"] = True
    chosen = built[index]
    report = {"runtime_candidates": entries, "optimized_for": key, "float_accuracy": {"val": float_accuracy}}
    log.info("runtime: kept %s (%s ms at %s)", entries[index]["candidate"],
             round(entries[index]["latency_ms"][key]["median"], 3), key)
    return chosen, report


@register_stage(RuntimeStage)
def run_runtime_stage(model: nn.Module | None, cfg: RuntimeStage, ctx: StageContext) -> nn.Module:
    if model is None:
        raise ConfigError(f"stages.{cfg.name}: runtime needs a float model from an earlier stage")
    chosen, report = choose_runtime(model, cfg, ctx)
    ctx.extra_metrics.update(report)
    fmt = getattr(chosen, "format", None) if isinstance(chosen, QuantizedModel) else None
    if fmt is not None:
        ctx.artifact_meta.update(format=fmt, runtime=chosen.frugal_runtime)
    elif getattr(chosen, "frugal_sparse", False):
        ctx.artifact_meta["format"] = "torch-packed"
    return chosen


def runtime(model: nn.Module, cfg: RuntimeStage, data: Any, *, log: logging.Logger | None = None,
            measure: Any = None) -> tuple[nn.Module, dict]:
    """Python API: (the fastest runtime of `model` within tolerance, the report of every candidate)."""
    ctx = StageContext(data=data, model_spec=artifact.spec_of(model), stage_dir=Path("."), measure_config=measure,
                       log=log or logging.getLogger("frugalml"))
    return choose_runtime(model, cfg, ctx)

"""Pieces every quantization backend shares: the wrapper base class the pipeline measures and saves,
calibration batches, and rebuilding the float skeleton a quantized artifact is restored into."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml._io import atomic_write_json, save_tensors_atomic
from frugalml.artifact import Trust, load_tensors, module_attributes
from frugalml.artifact import skeleton as float_skeleton
from frugalml.errors import ArtifactError, DataError, UnsupportedError
from frugalml.schemas import ARTIFACT_VERSION

log = logging.getLogger("frugalml.quantize")


class QuantizedModel(nn.Module):
    """What `quantize` returns: an inference-only module that runs a quantized runtime.

    The pipeline measures it as `measure(m.frugal_cost_model, data, predict=m, runtime=m.frugal_runtime)`
    (params and MACs come from the float model it was made from) and saves it with `m.save(...)`.
    """

    format: str = "quantized"

    def __init__(self, runtime: str, cost_model: nn.Module, recipe: dict) -> None:
        super().__init__()
        self.frugal_runtime = runtime
        self.frugal_recipe = dict(recipe)
        self.frugal_report: dict = {}  # candidates / reference latencies, filled by quantize()
        # not a submodule: its weights must not count as this module's state
        object.__setattr__(self, "frugal_cost_model", cost_model.eval())
        self.training = False

    def train(self, mode: bool = True) -> QuantizedModel:
        if mode:
            raise UnsupportedError(f"{self.frugal_runtime} models are inference-only; fine-tune the float model")
        self.training = False  # the runtimes inside are fixed in inference mode; nothing to switch
        return self

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        raise NotImplementedError


class CompiledRunner:
    """`torch.compile` with inductor freezing (weights become constants, so int8 weights are packed
    once for oneDNN). Static shapes: one graph per batch size, as inductor's int8 conv lowering
    rejects a symbolic batch; freezing is patched in only while a new shape compiles."""

    # dynamo counts recompiles per code object, so every stage's copy of the same model class (and
    # every batch size) shares one budget; past it dynamo silently falls back to eager, which would
    # make the "best fp32 runtime" reference an eager one. A run compiles a few dozen graphs at most.
    RECOMPILE_LIMIT = 64

    def __init__(self, module: nn.Module) -> None:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, self.RECOMPILE_LIMIT)
        self.module = module
        self._compiled: Any = None
        self._shapes: set[tuple[int, ...]] = set()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torch._inductor import config as inductor_config

        if self._compiled is None:
            self._compiled = torch.compile(self.module, dynamic=False)
        shape = tuple(x.shape)
        with torch.no_grad():
            if shape in self._shapes:
                return self._compiled(x)
            with inductor_config.patch(freezing=True), quiet():
                out = self._compiled(x)
            self._shapes.add(shape)
            return out


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Silence C++ writes to fd 1 (torch's TorchScript ONNX exporter dumps whole graphs there when
    an export fails, whatever its verbosity flag says)."""
    import os
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def import_torchao() -> None:
    """Import torchao without its start-up noise (optional CUDA kernels it cannot load on CPU)."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with quiet():
            import torchao  # noqa: F401
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_info(directory: Path, fmt: str, spec: dict, cost_model: nn.Module, recipe: dict,
               meta: dict | None = None, **extra: Any) -> None:  # fmt: skip
    """model.json of a quantized artifact: enough to rebuild the float skeleton and re-apply `recipe`."""
    info = {
        "frugalml_artifact": ARTIFACT_VERSION,
        "format": fmt,
        "spec": spec,
        "module_attributes": module_attributes(cost_model),
        "float_shapes": {k: list(v.shape) for k, v in cost_model.state_dict().items() if isinstance(v, torch.Tensor)},
        "quantization": recipe,
        **extra,
        **(meta or {}),
    }
    info["format"] = fmt  # meta must not relabel the files
    atomic_write_json(directory / "model.json", info)


def save_tensors(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    save_tensors_atomic({k: v.contiguous() for k, v in tensors.items()}, directory / name)


def read_tensors(directory: Path, name: str) -> dict[str, torch.Tensor]:
    return load_tensors(directory / name)


def skeleton(info: dict, directory: Path, trust_code: Trust) -> nn.Module:
    """The float model the artifact was quantized from, with its (possibly pruned) shapes and zeroed
    weights: quantized state is loaded into whatever the settings build from it."""
    return float_skeleton(info, directory, trust_code, info.get("float_shapes", {}))


def cpu_has_vnni() -> bool:
    """8-bit dot-product instructions (VNNI/AMX): without them int8 kernels must use 7-bit ranges."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def example_batch(spec: dict, batch: int = 64) -> torch.Tensor:
    """A fixed, deterministic input used to trace/rebuild graphs on load."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *spec["input_shape"], generator=g)


def calibration_batches(data: Any, n: int, batch_size: int) -> list[torch.Tensor]:
    """The first `n` batches of a fixed shuffle of the training split (val if there is no train)."""
    x = data.x_train if len(data.x_train) else data.x_val
    if len(x) == 0:
        raise DataError(f"dataset {data.name!r} has no train or val samples to calibrate on")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return [x[order[i : i + batch_size]] for i in range(0, min(len(x), n * batch_size), batch_size)]


def check_data_fits(model: nn.Module, spec: dict | None, data: Any) -> None:
    """Calibration data must have the shape the model was built for: say so in one line if not."""
    shape = tuple(data.input_shape)
    if spec is not None and tuple(spec.get("input_shape", shape)) != shape:
        raise DataError(
            f"calibration data {data.name!r} has input shape {list(shape)} but the model was built for "
            f"{list(spec['input_shape'])}; use the dataset the model was trained on"
        )
    try:
        with torch.no_grad():
            model.eval()(data.sample_input(2))
    except (RuntimeError, ValueError) as e:
        raise DataError(
            f"calibration data {data.name!r} of shape {list(shape)} does not fit the model "
            f"({str(e).splitlines()[0]}); use the dataset the model was trained on"
        ) from None


def quantizable_layers(model: nn.Module, types: tuple[type, ...]) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, types)]


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The quantization libraries warn (and print) a lot about their own internals; users cannot act
    on it. Errors still propagate."""
    loggers = [logging.getLogger(n) for n in ("", "onnxruntime", "torch.onnx", "torch._export", "torchao")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def replace_tensor(root: nn.Module, target: str, value: torch.Tensor) -> None:
    """Set a parameter/buffer/plain tensor attribute by dotted name, keeping its kind."""
    prefix, _, leaf = target.rpartition(".")
    owner = root.get_submodule(prefix) if prefix else root
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        setattr(owner, leaf, value)


def expect_same_keys(directory: Path, saved: set[str], rebuilt: set[str], what: str) -> None:
    if saved != rebuilt:
        diff = sorted(saved ^ rebuilt)[:5]
        raise ArtifactError(
            f"{directory}: the rebuilt {what} does not match the saved one (differs in {diff}); "
            "was it written by another torch/torchao version? re-run the quantize stage"
        )

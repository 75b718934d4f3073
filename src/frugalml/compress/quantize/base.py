"""What every backend's result shares: `QuantizedModel` (called like the float model, saved by one
routine, exported through two hooks) and `QuantizeContext` (what a backend may use besides the model
and its settings: calibration data, the QAT training setup, a scratch folder, the log).

Settings: the JSON dict that says how a model was quantized (mode, backend, observer, ...), saved
in model.json under `quantization`, and re-applied to the float skeleton on load.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from frugalml._io import atomic_write_bytes
from frugalml.artifact import Trust, changed_shapes, module_attributes, skeleton, write_info
from frugalml.compress.storage.packed import read_packed, write_packed
from frugalml.errors import ArtifactError, ConfigError, DataError, UnsupportedError
from frugalml.schemas import ARTIFACT_VERSION


class SafeTensors(NamedTuple):
    """An artifact file written as safetensors (with optional string metadata)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] | None = None


class QuantizedModel(nn.Module):
    """What `quantize` returns: an inference-only module that runs a quantized runtime.

    The pipeline measures it as `measure(m.frugal_cost_model, data, predict=m, runtime=m.frugal_runtime)`
    (params and MACs come from the float model it was made from) and saves it with `m.save(...)`.
    A subclass implements `run(x)` and `artifact()` (its files and extra model.json keys); the
    export hooks `to_onnx`/`to_pt2` work on `exportable()` unless overridden.
    """

    format: str = "quantized"
    compiled: bool = False  # True: runs a compiled graph; set False for the exact reference graph

    def __init__(self, runtime: str, cost_model: nn.Module, settings: dict) -> None:
        super().__init__()
        self.frugal_runtime = runtime
        self.frugal_settings = dict(settings)
        self.frugal_report: dict = {}  # candidates / reference latencies, filled by quantize()
        self.spec_changes: dict = {}  # ModelSpec keys the artifact needs to rebuild it (e.g. fold_bn)
        # not a submodule: its weights must not count as this module's state
        object.__setattr__(self, "frugal_cost_model", cost_model.eval())
        self.training = False

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.run(self._single_input(args, kwargs))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _single_input(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The float model's one tensor input, passed the way its forward accepts it (`q(x)`,
        `q(x=...)`, `q(input=...)`); anything beyond that one input is refused in one line."""
        if len(args) == 1 and not kwargs:
            return args[0]
        try:
            bound = inspect.signature(self.frugal_cost_model.forward).bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.frugal_runtime} model: {e}") from None
        values = list(bound.arguments.items())
        if len(values) > 1 and all(isinstance(v, torch.Tensor) for _, v in values):
            from frugalml.data.features import Features  # named inputs: q(input_ids=..., attention_mask=...)

            return Features(dict(values))  # type: ignore[return-value]
        if len(values) != 1 or not isinstance(values[0][1], torch.Tensor):
            raise UnsupportedError(
                f"{self.frugal_runtime} models take the float model's single tensor input; got "
                f"{', '.join(k for k, _ in values) or 'none'}"
            )
        return values[0][1]

    def train(self, mode: bool = True) -> QuantizedModel:
        if mode:
            raise UnsupportedError(
                f"{self.frugal_runtime} models are inference-only; fine-tune the float model"
            )
        self.training = False  # the runtimes inside are fixed in inference mode; nothing to switch
        return self

    # --- artifact: each subclass names its files; this one routine writes them ----------------

    def artifact(self) -> tuple[dict[str, bytes | SafeTensors], dict[str, Any]]:
        """(files by name, extra model.json keys)."""
        raise NotImplementedError

    def save(self, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
        """Write the files and model.json (enough to rebuild the float skeleton and re-apply the settings)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec = {**spec, **self.spec_changes}  # e.g. fold_bn: the caller's spec is the model before quantizing
        files, extra = self.artifact()
        written = []
        for name, content in files.items():
            if isinstance(content, SafeTensors):  # packed: a pruned model's zeros stay off the disk
                written.append(write_packed(directory / name, content.tensors, content.metadata).name)
            else:
                atomic_write_bytes(directory / name, content)
                written.append(name)
        cost = self.frugal_cost_model
        info = {
            "frugalml_artifact": ARTIFACT_VERSION,
            **{k: v for k, v in (meta or {}).items() if k not in ("format", "runtime")},
            "format": self.format,  # meta must not relabel the files
            "runtime": self.frugal_runtime,
            "spec": spec,
            "module_attributes": module_attributes(cost, spec),
            "float_shapes": changed_shapes(cost, spec),
            "quantization": self.frugal_settings,
            "files": sorted(written),
            **extra,
        }
        write_info(directory, info)
        return directory

    def nonzero_params(self) -> int | None:
        """Nonzero weights counted in this model's own stored tensors (not the float model it came
        from): integer weight tensors (int8 codes, zero = 0 for symmetric weights) and float ones
        (fp16/bf16), matrices and kernels only; scales and zero points are not weights. Added to the
        parameters the float model keeps outside those tensors (biases, norms), counted by their shapes:
        loaded from an artifact, the float model is a zeroed skeleton, and counting its nonzeros gave a
        loaded model fewer weights than the same model had when saved. None: not countable."""
        files, _ = self.artifact()
        stored = [t for f in files.values() if isinstance(f, SafeTensors) for k, t in f.tensors.items()
                  if t.dim() >= 2 and not any(w in k for w in ("scale", "zero_point"))
                  and t.dtype in (torch.int8, torch.float16, torch.bfloat16, torch.float32)]
        if not stored:
            return None
        cost = self.frugal_cost_model
        matrices = sum(p.numel() for p in cost.parameters() if p.dim() >= 2)
        if sum(t.numel() for t in stored) < matrices:
            return None  # not every weight is in these tensors (e.g. some layers kept in float elsewhere)
        others = sum(p.numel() for p in cost.parameters() if p.dim() < 2)
        return others + sum(int((t != 0).sum()) for t in stored)

    # --- export hooks (frugalml.export) ------------------------------------------------------------

    def exportable(self) -> nn.Module:
        """The plain torch module behind this wrapper, for torch.onnx / torch.export."""
        module = getattr(self, "module", None)
        if not isinstance(module, nn.Module):
            raise UnsupportedError(f"{self.frugal_runtime} models have no torch module to export")
        return module

    def to_onnx(self, x: torch.Tensor) -> bytes:
        from frugalml.compress.quantize.interop import export_onnx

        try:
            return export_onnx(self.exportable(), x)
        except UnsupportedError as e:
            raise UnsupportedError(
                f"{self.frugal_runtime} cannot be exported to ONNX ({e}); for an int8 ONNX model quantize "
                "with backend: onnxruntime, or export this artifact with --format pt2"
            ) from None

    def to_pt2(self, x: torch.Tensor) -> torch.export.ExportedProgram:
        from frugalml.compress.quantize.interop import capture_program

        return capture_program(self.exportable(), x, self.frugal_runtime)


@dataclass
class QuantizeContext:
    """What a backend may use besides the model and its settings."""

    data: Any = None  # a DataBundle: calibration batches and examples come from its train split
    calibration_batches: int = 8
    calibration_batch_size: int = 64
    train: Any = None  # QAT: the TrainConfig to fine-tune with (already merged with the stage's overrides)
    distill: float = 0.0  # QAT: weight of the distillation loss toward the float model (qat.distill)
    temperature: float = 4.0
    workdir: Path | None = None
    resume: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("frugalml.quantize"))

    def batches(self) -> list[torch.Tensor]:
        """The first full batches of a fixed shuffle of the training split (val if there is no train);
        all samples as one batch if there are fewer than a batch. Equal shapes: ONNX Runtime's
        histogram calibrators stack them."""
        data = self._need_data("calibrate")
        x = data.x_train if len(data.x_train) else data.x_val
        if len(x) == 0:
            raise DataError(f"dataset {data.name!r} has no train or val samples to calibrate on")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        size = min(self.calibration_batch_size, len(x))
        count = min(self.calibration_batches, len(x) // size)
        return [x[order[i * size : (i + 1) * size]] for i in range(count)]

    def loss_terms(self, float_model: nn.Module) -> list:
        """Trainer loss terms for QAT: distillation from a frozen copy of `float_model` (the model before
        quantization) when `distill` > 0, else none."""
        if self.distill <= 0:
            return []
        from frugalml.compress.distill.losses import DistillFrom

        return [DistillFrom(copy.deepcopy(float_model), self.distill, self.temperature)]

    def distill_report(self) -> dict:
        """The distillation settings for a QAT report: empty when QAT trained on labels alone."""
        return {"distill": self.distill, "temperature": self.temperature} if self.distill > 0 else {}

    def example(self) -> torch.Tensor:
        """One batch to trace the model with."""
        self._need_data("trace the model")
        return self.batches()[0]

    def _need_data(self, what: str) -> Any:
        if self.data is None:
            raise ConfigError(f"quantization needs data to {what} with; pass a dataset")
        return self.data


def check_data_fits(model: nn.Module, spec: dict | None, data: Any) -> None:
    """Calibration data must have the shape the model was built for: say so in one line if not."""
    if spec is not None:
        data.check_fits(spec, "the model to quantize")
    try:
        with torch.no_grad():
            model.eval()(data.sample_input(2))
    except (RuntimeError, ValueError) as e:
        raise DataError(
            f"calibration data {data.name!r} of shape {list(data.input_shape)} does not fit the model "
            f"({str(e).splitlines()[0]}); use the dataset the model was trained on"
        ) from None


def read_tensors(directory: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of one file `QuantizedModel.save` wrote (stored packed), bit-exact."""
    return read_packed(Path(directory) / name)


def saved_settings(info: dict, directory: Path) -> dict:
    settings = info.get("quantization")
    if not isinstance(settings, dict) or not isinstance(settings.get("mode"), str):
        raise ArtifactError(f"{directory}/model.json: quantization: missing or not a mapping with a mode")
    return dict(settings)


def float_skeleton(info: dict, directory: Path, trust_code: Trust) -> nn.Module:
    """The float model the artifact was quantized from, with its (possibly pruned) shapes and zeroed
    weights: quantized state is loaded into whatever the settings build from it."""
    return skeleton(info, directory, trust_code, info.get("float_shapes", {}))


def example_batch(spec: dict, batch: int = 8) -> torch.Tensor:
    """A fixed, deterministic input used to trace/rebuild graphs on load."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *spec["input_shape"], generator=g)

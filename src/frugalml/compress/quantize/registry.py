"""Quantization backends: one small protocol, one registry.

A backend is a `Backend` subclass in its own module, registered with `register_backend(...)` at the
bottom of that module, and its module named once in `BACKEND_MODULES` (whose order is the order
`backend: auto` tries candidates in). It says which `mode:` values it implements, what it needs
that may be missing here, how it quantizes (PTQ) or prepares/finishes QAT, which artifact formats
it writes and how it loads them. Registering also registers those formats with `frugalml.artifact`.

Backends are looked up by `(mode, name)`: `torch` is torch.ao for int8 modes, torchao for
`weight-only` and a plain cast for `fp16`/`bf16`; the YAML `backend:` value is the same for all three.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn

from frugalml.artifact import Trust, register_format
from frugalml.compress.quantize.base import QuantizeContext, QuantizedModel
from frugalml.errors import ConfigError, UnsupportedError

# module names under frugalml.compress.quantize; the order is `auto`'s order
BACKEND_MODULES = ("pt2e", "torch_ao", "onnxrt", "weight_only", "cast", "codebook")


class Backend:
    """The protocol every backend implements (override what your modes need)."""

    name: ClassVar[str]  # the YAML `backend:` value
    about: ClassVar[str]  # what runs it, for the schema's description of `backend:`
    modes: ClassVar[tuple[str, ...]]
    formats: ClassVar[tuple[str, ...]]  # artifact formats it saves and loads
    keeps_batchnorm: ClassVar[bool] = False  # can honour `fuse: false`
    keeps_float_layers: ClassVar[bool] = False  # can leave named layers in float (mixed precision)
    smooths: ClassVar[bool] = False  # applies `smooth` (SmoothQuant) before quantizing

    def missing(self) -> str | None:
        """What this machine lacks to run the backend, as one line (None: nothing)."""
        return None

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> QuantizedModel:
        """Post-training modes: a quantized copy of `model` (never modifies it)."""
        raise UnsupportedError(f"backend {self.name} has no post-training mode {settings['mode']!r}")

    def qat_prepare(self, model: nn.Module, settings: dict, example: Any) -> nn.Module:
        """A trainable copy of `model` with fake quantizers, for the Trainer."""
        raise UnsupportedError(f"backend {self.name} has no quantization-aware training")

    def qat_freeze(self, prepared: nn.Module) -> None:
        """Stop updating quantization ranges (and BatchNorm statistics) for the last epochs."""

    def qat_finish(self, prepared: nn.Module, float_model: nn.Module, settings: dict) -> QuantizedModel:
        raise UnsupportedError(f"backend {self.name} has no quantization-aware training")

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> QuantizedModel:
        raise NotImplementedError

    def require(self) -> None:
        """One UnsupportedError line naming what is missing and the alternatives, before any work."""
        missing = self.missing()
        if missing:
            others = sorted({b.name for m in self.modes for b in backends_for(m)} - {self.name})
            instead = f"; or use backend {' or '.join(others)}" if others else ""
            raise UnsupportedError(f"backend {self.name} needs {missing}{instead}")


@dataclass(frozen=True)
class Mode:
    """A `mode:` value: how a model is built with a backend, and whether it needs data."""

    build: Callable[[Backend, nn.Module, dict, QuantizeContext], QuantizedModel]
    needs_data: bool = False  # calibration or training data, whatever the backend
    trains: bool = False  # `auto` keeps the first backend that works instead of measuring them all


def _post_training(
    backend: Backend, model: nn.Module, settings: dict, ctx: QuantizeContext
) -> QuantizedModel:
    return backend.quantize(model, settings, ctx)


def _quantization_aware(
    backend: Backend, model: nn.Module, settings: dict, ctx: QuantizeContext
) -> QuantizedModel:
    from frugalml.compress.quantize.qat import run_qat

    return run_qat(backend, model, settings, ctx)


MODES: dict[str, Mode] = {
    "static": Mode(_post_training, needs_data=True),
    "dynamic": Mode(_post_training),
    "qat": Mode(_quantization_aware, needs_data=True, trains=True),
    "weight-only": Mode(_post_training),
    "fp16": Mode(_post_training),
    "bf16": Mode(_post_training),
    "codebook": Mode(_post_training),  # k-means weight sharing; `qat:` fine-tunes the centroids
}

_BACKENDS: dict[tuple[str, str], Backend] = {}  # (mode, name), in registration order
_BY_FORMAT: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    for mode in backend.modes:
        if mode not in MODES:
            raise ValueError(f"backend {backend.name}: unknown mode {mode!r}; known: {', '.join(MODES)}")
        if (mode, backend.name) in _BACKENDS and type(_BACKENDS[(mode, backend.name)]) is not type(backend):
            raise ValueError(f"mode {mode!r} already has a backend {backend.name!r}")
        _BACKENDS[(mode, backend.name)] = backend
    for fmt in backend.formats:
        _BY_FORMAT[fmt] = backend
        register_format(fmt, _save, backend.load)
    return backend


def _save(model: nn.Module, directory: Path, spec: dict, meta: dict) -> Path:
    if not isinstance(model, QuantizedModel):
        raise TypeError(f"quantized artifact formats save QuantizedModels, got {type(model).__name__}")
    return model.save(directory, spec, meta)


def load_backends() -> None:
    for name in BACKEND_MODULES:
        importlib.import_module(f"frugalml.compress.quantize.{name}")


def backends_for(mode: str) -> list[Backend]:
    load_backends()
    return [b for (m, _), b in _BACKENDS.items() if m == mode]


def backend_names() -> list[str]:
    load_backends()
    return list(dict.fromkeys(name for _, name in _BACKENDS))


def backend_help() -> str:
    """`auto | pt2e (...) | torch (...; ...)`: the `backend:` values and what each runs."""
    load_backends()
    about: dict[str, list[str]] = {}
    for (_, name), b in _BACKENDS.items():
        about.setdefault(name, [])
        if b.about not in about[name]:
            about[name].append(b.about)
    return " | ".join(["auto", *(f"{n} ({'; '.join(a)})" for n, a in about.items())])


def get_backend(mode: str, name: str) -> Backend:
    load_backends()
    found = _BACKENDS.get((mode, name))
    if found is None:
        allowed = ", ".join(b.name for b in backends_for(mode)) or "none"
        raise ConfigError(f"mode {mode!r} runs on backend {allowed} (or auto), not {name!r}")
    return found


def formats() -> list[str]:
    load_backends()
    return list(_BY_FORMAT)

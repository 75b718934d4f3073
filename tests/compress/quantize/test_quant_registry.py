"""The backend registry: what `auto` tries, what each backend requires, and that every artifact
format a backend writes is found by `frugalml.artifact.load` without importing quantization first."""

from __future__ import annotations

import importlib

import pytest

from frugalml import artifact
from frugalml.compress.quantize import registry
from frugalml.compress.quantize.base import QuantizedModel
from frugalml.errors import ConfigError, UnsupportedError


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("static", ["pt2e", "torch", "onnxruntime"]),
        ("dynamic", ["pt2e", "torch", "onnxruntime"]),
        ("qat", ["pt2e", "torch"]),
        ("weight-only", ["torch"]),
        ("fp16", ["torch"]),
        ("bf16", ["torch"]),
    ],
)
def test_auto_tries_the_backends_registered_for_a_mode_in_order(mode, names):
    assert [b.name for b in registry.backends_for(mode)] == names


def test_every_format_is_mapped_to_the_module_that_registers_it():
    for mode in registry.MODES:
        for backend in registry.backends_for(mode):
            assert backend.formats, backend
            for fmt in backend.formats:
                module = importlib.import_module(artifact.FORMAT_MODULES[fmt])
                assert type(backend).__module__ == module.__name__, fmt
                assert artifact.LOADERS[fmt] == backend.load


def test_unknown_pairs_and_duplicate_registrations_are_refused(monkeypatch):
    with pytest.raises(ConfigError, match="mode 'qat' runs on backend pt2e, torch"):
        registry.get_backend("qat", "onnxruntime")
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))

    class Other(registry.Backend):
        name, about, modes, formats = "torch", "x", ("static",), ()

    with pytest.raises(ValueError, match="mode 'static' already has a backend 'torch'"):
        registry.register_backend(Other())

    class Odd(registry.Backend):
        name, about, modes, formats = "odd", "x", ("int3",), ()

    with pytest.raises(ValueError, match="unknown mode 'int3'"):
        registry.register_backend(Odd())


def test_require_names_what_is_missing_and_the_alternatives():
    class Missing(registry.Backend):
        name, about, modes, formats = "pt2e", "x", ("static", "dynamic"), ()

        def missing(self):
            return "torchao (pip install torchao)"

    with pytest.raises(
        UnsupportedError,
        match=r"^backend pt2e needs torchao \(pip install torchao\); "
        r"or use backend onnxruntime or torch$",
    ):
        Missing().require()


def test_quantized_artifacts_are_saved_by_the_one_save_routine():
    savers = {artifact.SAVERS[f] for f in registry.formats()}
    assert len(savers) == 1
    overridden = [c for c in QuantizedModel.__subclasses__() if "save" in vars(c)]
    assert overridden == []

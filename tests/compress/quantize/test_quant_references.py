"""Honest fp32 baselines: a compiled reference is compiled and warmed up in the mode it is timed in,
a reference that recompiles while timed is not reported, and one far slower than fp32 eager is
noted and never used as the best-fp32 baseline (issue #8: a torch.compile reference timed at
29.4 ms at batch 1, eager 0.2 ms, once gave int8 a 693x "speedup")."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from frugalml.compress.quantize import select
from frugalml.compress.quantize._runtime import CompiledRunner
from frugalml.measure import measure_latency

LOG = logging.getLogger("test")


def _lat(b1: float, b64: float) -> dict:
    return {"b1": {"median": b1}, "b64": {"median": b64}}


def test_a_reference_slower_than_twice_eager_is_never_the_baseline():
    refs = {
        "fp32-eager": _lat(0.2, 2.0),
        "fp32-torch-compile": _lat(29.4, 1.2),  # recompiling at batch 1, fastest at batch 64
        "fp32-onnxruntime": _lat(0.15, 1.5),
    }
    chosen = _lat(0.0424, 0.6)
    notes = select.slow_references(refs)
    assert (
        set(notes) == {"fp32-torch-compile"}
        and "147.0x slower than fp32 eager at b1" in notes["fp32-torch-compile"]
    )
    s = select.speedups(chosen, refs, notes)
    assert s["best_fp32_runtime"] == {"b1": "fp32-onnxruntime", "b64": "fp32-onnxruntime"}
    assert s["vs_best_fp32"]["b1"] == pytest.approx(0.15 / 0.0424)  # not 29.4 / 0.0424 = 693x
    assert select.speedups(chosen, refs)["vs_best_fp32"]["b1"] == pytest.approx(0.15 / 0.0424)  # per batch size


class _Slow:
    """A reference runtime 2 ms per call: far slower than eager on a tiny CNN."""

    def __call__(self, x):
        time.sleep(0.002)
        return torch.zeros(len(x), 4)


class _Recompiling(_Slow):
    """A reference runtime that compiles on every call (what a guard failure looks like)."""

    compiles = 0

    def __call__(self, x):
        self.compiles += 1
        return torch.zeros(len(x), 4)


def test_reference_latencies_drop_recompiling_and_note_slow_runtimes(cnn, data, measure_cfg, monkeypatch):
    model, _ = cnn
    monkeypatch.setitem(select.REFERENCES, "torch-compile", lambda m, d: _Recompiling())
    monkeypatch.setitem(select.REFERENCES, "onnxruntime", lambda m, d: _Slow())
    refs, notes = select.reference_latencies(model, data, ["torch-compile", "onnxruntime"], measure_cfg, LOG)
    assert set(refs) == {"fp32-eager", "fp32-onnxruntime"}  # the recompiling one is not reported
    assert "recompiled while being timed" in notes["fp32-torch-compile"]
    assert "slower than fp32 eager" in notes["fp32-onnxruntime"]
    chosen = {b: {"median": 0.01} for b in refs["fp32-eager"]}
    assert set(select.speedups(chosen, refs, notes)["best_fp32_runtime"].values()) == {"fp32-eager"}


def test_compiled_runner_compiles_once_per_batch_size_whatever_the_grad_mode(cnn, data, measure_cfg):
    """A graph compiled under no_grad used to recompile (without freezing) when timed under
    inference_mode; the runner now runs every call in inference mode."""
    model, _ = cnn
    runner = CompiledRunner(model)
    x = data.sample_input(8)
    with torch.no_grad():
        expected = model(x)
        runner(x)
    runner.warm_up([data.sample_input(1)])
    assert runner.compiles == 2  # batch 8 and batch 1
    measure_latency(runner, x, measure_cfg)  # under torch.inference_mode()
    with torch.enable_grad():
        torch.testing.assert_close(runner(x), expected, atol=1e-4, rtol=1e-4)
    assert runner.compiles == 2


class _FreezingSpy(CompiledRunner):
    """Records whether inductor freezing was on for each compilation."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__(module)
        self.frozen: list[bool] = []

    def _inductor(self, gm, example_inputs):
        from torch._inductor import config as inductor_config

        self.frozen.append(bool(inductor_config.freezing))
        return super()._inductor(gm, example_inputs)


def test_compiled_runner_compiles_again_with_freezing_after_a_dynamo_reset(cnn, data):
    """torch.export (pt2e, ONNX export, loading a pt2e artifact) resets dynamo; the next call of a
    model compiled before it used to compile again without freezing (int8 2-3x slower)."""
    model, _ = cnn
    runner = _FreezingSpy(model.eval())
    x = data.sample_input(8)
    expected = runner(x).clone()
    torch._dynamo.reset()
    torch.testing.assert_close(runner(x), expected)
    # dynamo compiled it again outside the runner's patch; the runner then compiled a frozen graph
    assert runner.frozen == [True, False, True]
    runner(x)
    runner(data.sample_input(1))  # a new shape on the recompiled function: frozen as well
    assert runner.frozen == [True, False, True, True]

"""`backend: auto` measures every candidate and keeps the fastest within tolerance; the stage
handler reports candidates, fp32 reference latencies and speedups; mixed precision keeps the most
sensitive layers in float."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.compress.quantize import QuantizedModel, QuantizeStage, quantize, save_quantized
from frugalml.compress.quantize.mixed import search
from frugalml.compress.quantize.select import accuracy, pick, speedups
from frugalml.stages import StageContext, handler_for

LOG = logging.getLogger("test")


def test_auto_stage_measures_every_candidate_and_reports_baselines(cnn, data, measure_cfg, tmp_path):
    model, spec = cnn
    cfg = QuantizeStage(
        name="int8",
        mode="static",
        backend="auto",
        calibration_batches=2,
        observer="minmax",
        references=["onnxruntime"],
    )
    ctx = StageContext(data=data, model_spec=spec, stage_dir=tmp_path / "stage", measure_config=measure_cfg)
    q = handler_for(cfg)(model, cfg, ctx)

    cands = ctx.extra_metrics["candidates"]
    assert [c["backend"] for c in cands] == ["pt2e", "torch", "onnxruntime"]
    assert sum(c["chosen"] for c in cands) == 1
    for c in cands:
        assert "error" not in c, c
        assert 0.0 <= c["accuracy"] <= 1.0
        assert set(c["latency_ms"]) == {"b1", "b8"} and all(v["median"] > 0 for v in c["latency_ms"].values())
    chosen = next(c for c in cands if c["chosen"])
    assert chosen["runtime"] == q.frugal_runtime == ctx.artifact_meta["runtime"]
    assert ctx.artifact_meta["format"] == q.format

    refs = ctx.extra_metrics["reference_latency_ms"]
    assert {"fp32-eager", "fp32-onnxruntime"} <= set(refs)
    speed = ctx.extra_metrics["speedup"]
    assert set(speed["best_fp32_runtime"].values()) <= set(refs)
    eager = refs["fp32-eager"]["b8"]["median"]
    assert speed["vs_fp32_eager"]["b8"] == pytest.approx(eager / chosen["latency_ms"]["b8"]["median"])
    assert speed["vs_best_fp32"]["b8"] <= speed["vs_fp32_eager"]["b8"] + 1e-9  # best fp32 is never slower

    # the pipeline measures the wrapper through its float cost model (not a submodule: its weights are
    # not the artifact's) and saves it with its format's saver
    assert isinstance(q, QuantizedModel) and q.frugal_cost_model is model
    assert all(m is not model for m in q.modules())
    artifact.save_any(q, ctx.stage_dir, spec, {"stage": "int8", **ctx.artifact_meta})
    assert artifact.read_info(ctx.stage_dir)["format"] == q.format


def _cand(backend, acc, ms):
    return {
        "backend": backend,
        "accuracy": acc,
        "latency_ms": {"b1": {"median": ms / 10}, "b64": {"median": ms}},
    }


def test_pick_prefers_fastest_within_tolerance_else_most_accurate():
    cands = [
        _cand("a", 0.90, 5.0),
        _cand("b", 0.95, 9.0),
        _cand("c", 0.949, 7.0),
        {"backend": "d", "error": "x"},
    ]
    assert pick(cands, 0.951, tolerance=0.5, log=LOG) == 2  # a drops 5.1 points; c is faster than b
    assert pick(cands, 0.951, tolerance=10.0, log=LOG) == 0
    assert pick(cands, 0.99, tolerance=0.1, log=LOG) == 1  # none within: the most accurate


def test_speedups_use_the_fastest_fp32_reference():
    refs = {"fp32-eager": {"b64": {"median": 10.0}}, "fp32-onnxruntime": {"b64": {"median": 4.0}}}
    s = speedups({"b64": {"median": 2.0}}, refs)
    assert s == {
        "vs_fp32_eager": {"b64": 5.0},
        "vs_best_fp32": {"b64": 2.0},
        "best_fp32_runtime": {"b64": "fp32-onnxruntime"},
    }


def test_the_best_fp32_runtime_is_chosen_per_batch_size():
    refs = {"fp32-eager": {"b1": {"median": 0.4}, "b64": {"median": 1.5}},
            "fp32-torch-compile": {"b1": {"median": 0.34}, "b64": {"median": 0.6}},
            "fp32-onnxruntime": {"b1": {"median": 0.09}, "b64": {"median": 0.75}}}
    s = speedups({"b1": {"median": 0.12}, "b64": {"median": 0.4}}, refs)
    assert s["best_fp32_runtime"] == {"b1": "fp32-onnxruntime", "b64": "fp32-torch-compile"}
    assert s["vs_best_fp32"]["b1"] == pytest.approx(0.09 / 0.12)  # slower than ONNX Runtime fp32 at b1: < 1


class _Noisy(QuantizedModel):
    """Stand-in for a quantized model: the float model with noise on the outputs of 'quantized' layers,
    scaled per layer, so the sensitivity ranking has a known answer."""

    def __init__(self, model, noisy_layers, scale):
        super().__init__("fake", model, {"mode": "static"})
        self.model, self.handles = model, []
        for name, mod in model.named_modules():
            if name in noisy_layers:
                gen = torch.Generator().manual_seed(len(name))

                def noise(m, i, o, s=scale[name], g=gen):
                    return o + s * torch.randn(o.shape, generator=g) * o.std()

                self.handles.append(mod.register_forward_hook(noise))

    def run(self, x):
        try:
            return self.model(x)
        finally:
            for h in self.handles:
                h.remove()
            self.handles.clear()


def test_mixed_precision_keeps_the_sensitive_layer_in_float(cnn, data):
    model, _ = cnn
    layers = ["features.0.0", "features.1.0", "fc"]
    scale = {"features.0.0": 0.0, "features.1.0": 20.0, "fc": 0.01}  # only features.1.0 hurts accuracy
    built = []

    def build(float_layers):
        built.append(list(float_layers))
        return _Noisy(model, [n for n in layers if n not in float_layers], scale)

    _, report = search(model, build, data, accuracy(model, data), tolerance=3.0, log=LOG)
    assert report["full_int8_drop_points"] > 3.0
    ranked = max(report["sensitivity_points"], key=report["sensitivity_points"].get)
    assert ranked == "features.1.0"
    assert report["float_layers"] == ["features.1.0"]
    assert report["final_drop_points"] <= 3.0
    assert built[0] == []  # the all-int8 model is tried first


def _with_a_dead_outlier(model: nn.Module) -> nn.Module:
    """Switch off channel 0 of the last conv block (its BN output is -5 before the ReLU) and make the
    fc weights reading it 1000: no effect on float outputs, but a per-tensor int8 scale of fc's
    weights then rounds every other fc weight to 0."""
    conv, bn = model.features[1][0], model.features[1][1]
    with torch.no_grad():
        conv.weight[0] = 0
        bn.running_mean[0], bn.running_var[0], bn.weight[0], bn.bias[0] = 0.0, 1.0, 1.0, -5.0
        model.fc.weight[:, 0] = 1000.0
    return model


def test_mixed_precision_stage_records_float_layers_in_the_settings(cnn, data, measure_cfg, tmp_path):
    model, spec = cnn
    model = _with_a_dead_outlier(model)
    cfg = QuantizeStage(
        mode="static",
        backend="torch",
        mixed_precision=True,
        tolerance=0.0,
        observer="minmax",
        per_channel=False,
        calibration_batches=2,
        references=[],
    )
    q = quantize(model, cfg, data, measure=measure_cfg, spec=spec)
    report = q.frugal_report["mixed_precision"]
    assert report["full_int8_drop_points"] > 10  # fc's other weights quantized to 0
    assert report["float_layers"] == ["fc"] and report["final_drop_points"] <= 0.0
    assert q.frugal_settings["float_layers"] == ["fc"]
    assert type(q.module.fc) is nn.Linear  # left in float
    save_quantized(q, tmp_path / "q", spec)
    x = data.sample_input(8)
    assert torch.equal(artifact.load(tmp_path / "q")(x), q(x))

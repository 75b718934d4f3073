"""Each quantization mode/backend on small trained zoo models: outputs close to float, and the
artifact round-trips (loading gives the same outputs as the saved in-memory model)."""

from __future__ import annotations

import json

import pytest
import torch

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized


def roundtrip(q, spec, path):
    save_quantized(q, path, spec)
    info = json.loads((path / "model.json").read_text())
    assert info["format"] == q.format and info["quantization"] == q.frugal_settings
    assert sorted(p.name for p in path.iterdir()) == sorted([*info["files"], "model.json"])
    loaded = artifact.load(path, trust_code=True)
    assert type(loaded) is type(q) and loaded.frugal_runtime == q.frugal_runtime
    return loaded


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_static_int8_matches_float_and_roundtrips(backend, cnn, make, data, agreement, tmp_path):
    model, spec = cnn
    x = data.sample_input(64)
    q = make(model, backend, mode="static", observer="minmax")
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert agreement(ref, out) >= 0.9
    assert not torch.equal(ref, out)  # really quantized, not the float model passed through
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), out)


@pytest.mark.parametrize("backend", ["pt2e", "torch", "onnxruntime"])
def test_int8_artifact_is_much_smaller_than_float(backend, mlp, make, tmp_path):
    model, spec = mlp  # weights dominate its size (a tiny CNN is mostly graph and scales)
    save_quantized(make(model, backend, mode="static", observer="minmax"), tmp_path / "q", spec)
    artifact.save(model, tmp_path / "float", spec)
    size = sum(p.stat().st_size for p in (tmp_path / "q").iterdir())
    float_size = sum(p.stat().st_size for p in (tmp_path / "float").iterdir())
    assert size < 0.5 * float_size


def test_pt2e_static_compiled_and_reference_graphs_roundtrip(cnn, make, data, agreement, tmp_path):
    model, spec = cnn
    x = data.sample_input(8)
    q = make(model, "pt2e", mode="static", observer="minmax")
    loaded = roundtrip(q, spec, tmp_path / "q")
    q.compiled = loaded.compiled = False  # reference q/dq graphs: bit-identical after a round trip
    assert torch.equal(loaded(x), q(x))
    assert agreement(model(x), q(x)) >= 0.9
    q.compiled = True  # the fast path: inductor int8 kernels, same numbers up to float rounding
    fast = q(x)
    assert agreement(fast, model(x)) >= 0.9
    torch.testing.assert_close(fast, loaded(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("observer", ["histogram", "percentile"])
def test_observers_calibrate_close_to_float(observer, cnn, make, data, agreement):
    model, _ = cnn
    x = data.sample_input(64)
    q = make(model, "torch", mode="static", observer=observer, per_channel=False)
    assert agreement(model(x), q(x)) >= 0.9


def test_static_without_fusion_keeps_batchnorm_separate(cnn, make, data, agreement, tmp_path):
    model, spec = cnn
    q = make(model, "torch", mode="static", fuse=False)
    kinds = {type(m).__name__ for m in q.module.modules()}
    assert "BatchNorm2d" in kinds and "ConvReLU2d" not in kinds
    x = data.sample_input(64)
    assert agreement(model(x), q(x)) >= 0.9
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), q(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "backend"),
    [
        ("mlp", {"hidden": [64, 32]}, "torch"),
        ("mlp", {"hidden": [64, 32]}, "onnxruntime"),
        ("mlp", {"hidden": [64, 32]}, "pt2e"),
        ("lstm", {"hidden": 16}, "torch"),
        ("gru", {"hidden": 16}, "torch"),
    ],
)
def test_dynamic_int8(name, kwargs, backend, zoo, make, data, agreement, tmp_path):
    model, spec = zoo(name, **kwargs)
    x = data.sample_input(64)
    q = make(model, backend, mode="dynamic")
    q.compiled = False  # pt2e: the reference graph, same numbers without a compile in the unit tests
    assert agreement(model(x), q(x)) >= 0.9
    loaded = roundtrip(q, spec, tmp_path / "q")
    loaded.compiled = False
    assert torch.equal(loaded(x), q(x))
    if backend == "torch":
        quantized = [m for m in q.module.modules() if ".quantized.dynamic." in type(m).__module__]
        assert quantized, "no layer was dynamically quantized"


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 16)])
def test_weight_only(bits, group, mlp, make, data, agreement, tmp_path):
    model, spec = mlp
    x = data.sample_input(64)
    q = make(model, "torch", mode="weight-only", bits=bits, group_size=group)
    assert agreement(model(x), q(x)) >= 0.9
    assert q.frugal_runtime == f"torchao-int{bits}-weight-only"
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), q(x))


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_half_precision_casts(mode, cnn, data, agreement, tmp_path):
    model, spec = cnn
    x = data.sample_input(64)
    q = quantize(model, QuantizeStage(mode=mode), None, spec=spec)
    out = q(x)
    assert out.dtype == torch.float32 and agreement(model(x), out) >= 0.9
    assert all(p.dtype == q.dtype for p in q.module.parameters())
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), out)
    weights = (tmp_path / "q" / "model.safetensors").stat().st_size
    artifact.save(model, tmp_path / "float", spec)
    assert weights < 0.6 * (tmp_path / "float" / "model.safetensors").stat().st_size


# pt2e QAT of conv-bn models spends ~30 s folding conv-bn patterns (and as long again to load);
# the MLP exercises the same pt2e QAT path without them (test_quant_user_models covers a conv-bn one)
@pytest.mark.parametrize(("backend", "net"), [("pt2e", "mlp"), ("torch", "cnn")])
def test_qat_trains_through_the_trainer_and_leaves_the_float_model_alone(
    backend, net, request, make, data, agreement, tmp_path
):
    model, spec = request.getfixturevalue(net)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = make(model, backend, mode="qat", qat={"epochs": 2, "lr": 0.01}, workdir=tmp_path / "work")
    assert q.frugal_report["qat"]["epochs_run"] == 2
    assert (tmp_path / "work" / f"qat-{backend}").is_dir()  # the Trainer's own checkpoints
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = data.sample_input(8)
    q.compiled = False
    assert agreement(model(x), q(x)) >= 0.75  # fine-tuned: close to, not equal to, the float model
    loaded = roundtrip(q, spec, tmp_path / "q")
    loaded.compiled = False
    assert torch.equal(loaded(x), q(x))

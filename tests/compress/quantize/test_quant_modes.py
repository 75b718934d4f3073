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


def _stored(directory) -> int:
    """Bytes of an artifact's weight files (packed: `.safetensors`, or `.safetensors.zst`)."""
    return sum(f.stat().st_size for f in directory.iterdir() if ".safetensors" in f.name)


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 16)])
def test_weight_only(bits, group, mlp, make, data, agreement, tmp_path):
    model, spec = mlp
    x = data.sample_input(64)
    q = make(model, "torch", mode="weight-only", bits=bits, group_size=group)
    assert agreement(model(x), q(x)) >= 0.9
    assert q.frugal_runtime == f"torch-int{bits}-weight-only"
    assert {e["path"] for e in q.frugal_settings["layers"].values()} == {"torchao"}
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), q(x))


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_covers_convolutions_and_pads_groups(bits, cnn, make, data, agreement, tmp_path):
    """Convolutions are quantized too (dequantized on the fly), and int4 groups that do not divide a
    layer's width are zero-padded and reported, not silently left in fp32."""
    model, spec = cnn
    x = data.sample_input(64)
    q = make(model, "torch", mode="weight-only", bits=bits, group_size=32 if bits == 4 else None)
    layers = q.frugal_settings["layers"]
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(layers[n]["path"] == "dequant" for n in convs)
    assert agreement(model(x), q(x)) >= (0.9 if bits == 8 else 0.8)  # int4 on an 8-channel toy CNN is rough
    padded = {n: e["padding"] for n, e in layers.items() if e.get("padding")}
    if bits == 4:  # the first conv has 1*3*3 = 9 inputs per row: padded to a whole group
        assert padded and "padded" in q.frugal_report["notes"][0]
    loaded = roundtrip(q, spec, tmp_path / "q")
    assert torch.equal(loaded(x), q(x))
    stored = _stored(tmp_path / "q")
    artifact.save(model, tmp_path / "float", spec)
    fp32 = (tmp_path / "float" / "model.safetensors").stat().st_size
    # int8 codes + scales vs fp32, on a toy model whose 9-wide first layer pays padding and headers
    assert stored < fp32 / (1.4 if bits == 4 else 1.2)


def test_codebook_keeps_zeros_fine_tunes_centroids_and_stores_codes(mlp, data, measure_cfg, tmp_path):
    from frugalml.compress.prune import UnstructuredPrune, prune
    from frugalml.train import TrainConfig

    model, spec = mlp
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    cfg = QuantizeStage(mode="codebook", bits=4, qat={"epochs": 1, "lr": 0.01}, references=[])
    q = quantize(sparse, cfg, data, spec=spec, train=TrainConfig(epochs=1, batch_size=64), measure=measure_cfg)
    assert q.frugal_report["codebook_training"]["epochs_run"] == 1
    before = dict(sparse.named_parameters())
    for name, p in q.module.named_parameters():
        p0 = before[name]
        if p.dim() >= 2:
            assert torch.equal(p == 0, p0 == 0), name  # zeros stay zeros, nothing regrows
            assert torch.unique(p[p != 0]).numel() <= 16, name  # 4-bit: at most 16 shared values
    loaded = roundtrip(q, spec, tmp_path / "q")
    x = data.sample_input(8)
    assert torch.equal(loaded(x), q(x))
    stored = _stored(tmp_path / "q")
    artifact.save(model, tmp_path / "float", spec)
    assert stored < (tmp_path / "float" / "model.safetensors").stat().st_size / 8  # tiny model: headers count


def test_codebook_half_floats_stores_centroids_and_biases_in_two_bytes(cnn, make, data, agreement, tmp_path):
    model, spec = cnn
    x = data.sample_input(64)
    full, half = (make(model, "torch", mode="codebook", bits=4, qat={"epochs": 1}, half_floats=h) for h in (False, True))
    floats = [t for t in half.module.state_dict().values() if t.is_floating_point()]
    assert floats and all(torch.equal(t.half().float(), t) for t in floats)
    assert not all(torch.equal(t.half().float(), t) for t in full.module.state_dict().values() if t.is_floating_point())
    assert agreement(full(x), half(x)) >= 0.95
    loaded = roundtrip(half, spec, tmp_path / "half")
    assert torch.equal(loaded(x), half(x))
    save_quantized(full, tmp_path / "full", spec)
    # each bias element saves 2 of its 4 bytes (random float bits: zstd saved nothing on them before);
    # centroids and the small weights stored as they are save more, less predictably (zstd found their repeats)
    biases = sum(m.bias.numel() for m in half.module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert _stored(tmp_path / "full") - _stored(tmp_path / "half") >= 2 * biases
    with pytest.raises(ValueError, match="half_floats needs mode: codebook"):
        QuantizeStage(mode="weight-only", half_floats=True)


def test_half_floats_leaves_a_tensor_float16_cannot_hold_in_float32():
    from frugalml.compress.quantize.codebook import round_to_half

    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.bias[0] = 1e5  # float16 tops out at 65504: rounding would make it inf
        before = layer.bias.clone()
        assert round_to_half(layer) == ["bias"]
    assert torch.equal(layer.bias, before)
    assert torch.equal(layer.weight.half().float(), layer.weight)


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_half_precision_casts(mode, cnn, data, agreement, tmp_path):
    model, spec = cnn
    x = data.sample_input(64)
    q = quantize(model, QuantizeStage(mode=mode), None, spec=spec)
    out = q(x)
    assert out.dtype == torch.float32 and agreement(model(x), out) >= 0.9
    assert all(p.dtype == q.dtype for p in q.module.parameters())
    assert torch.equal(roundtrip(q, spec, tmp_path / "q")(x), out)
    weights = _stored(tmp_path / "q")
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


@pytest.mark.parametrize(("mode", "fields", "report"), [("codebook", {"bits": 3}, "codebook_training"),
                                                   ("qat", {}, "qat")])
def test_qat_distill_pulls_the_model_toward_the_float_one(mode, fields, report, mlp, data, make):
    """`qat.distill` adds a KL term toward the model before quantization: on shuffled labels (which pull
    the weights anywhere), the distilled tuning stays much closer to the float model than labels alone,
    and the float model is left as it was (the teacher is a copy)."""
    import dataclasses

    import torch.nn.functional as F

    model, _ = mlp
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(data, y_train=data.y_train[order])
    x = data.x_val
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = F.log_softmax(model(x), -1)

    def kl(distill: float) -> float:
        q = make(model, "torch", data=shuffled, mode=mode, qat={"epochs": 4, "lr": 0.05, "distill": distill}, **fields)
        assert ("distill" in q.frugal_report[report]) == (distill > 0)
        q.compiled = False
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(q(x), -1), ref, log_target=True, reduction="batchmean"))

    labels_only, distilled = kl(0.0), kl(5.0)
    assert distilled < 0.5 * labels_only, (distilled, labels_only)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_qat_distill_needs_a_training_mode_and_data(mlp):
    from frugalml.errors import ConfigError

    with pytest.raises(ValueError, match="qat.distill needs mode: qat or codebook"):
        QuantizeStage(mode="static", qat={"distill": 1.0})
    with pytest.raises(ConfigError, match="needs data"):
        quantize(mlp[0], QuantizeStage(mode="codebook", backend="torch", qat={"distill": 1.0}), None)

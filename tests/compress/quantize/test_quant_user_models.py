"""Issue #7, on models written the way users write them (user_nets.py): a hand-written CNN (residual
add, concat, depthwise + pointwise, a conv+ReLU block applied twice, BatchNorm, `F.relu`, GAP +
Linear) and the classic PyTorch MNIST CNN (`x.view(-1, 320)`, `torch.relu`)."""

from __future__ import annotations

import pytest
import torch

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.errors import UnsupportedError
from frugalml.stages import StageContext, handler_for


def test_pt2e_says_a_module_applied_twice_is_why_it_refuses(hand_cnn, make, data, agreement):
    model, _ = hand_cnn()
    with pytest.raises(UnsupportedError) as e:
        make(model, "pt2e", mode="static")
    message = str(e.value)
    assert "module 'block' is applied 2 times in forward" in message and "use backend torch" in message
    assert "\n" not in message
    x = data.sample_input(32)
    assert agreement(make(model, "torch", mode="static")(x), model(x)) >= 0.9  # torch.ao takes it


def test_qat_auto_falls_back_to_torch_when_pt2e_cannot_take_the_model(hand_cnn, data, measure_cfg, tmp_path):
    model, spec = hand_cnn()
    cfg = QuantizeStage(mode="qat", backend="auto", qat={"epochs": 1}, references=[])
    q = quantize(model, cfg, data, measure=measure_cfg, spec=spec, workdir=tmp_path / "work")
    pt2e, torch_ao = q.frugal_report["candidates"]
    assert pt2e["backend"] == "pt2e" and "applied 2 times" in pt2e["error"] and not pt2e["chosen"]
    assert torch_ao["backend"] == "torch" and torch_ao["chosen"] and q.frugal_runtime == "torch-ao-int8"
    assert q.frugal_report["qat"]["epochs_run"] == 1
    save_quantized(q, tmp_path / "q", spec)
    x = data.sample_input(8)
    assert torch.equal(artifact.load(tmp_path / "q", trust_code=True)(x), q(x))


def test_pt2e_qat_model_with_functional_relu_loads_back(hand_cnn, make, data, tmp_path):
    """conv-BN-F.relu: QAT keeps a q/dq pair before the ReLU that PTQ fuses away, so the loader must
    rebuild the QAT graph (it used to rebuild a PTQ one and refuse its own artifact)."""
    model, spec = hand_cnn(shared=False)
    q = make(model, "pt2e", mode="qat", qat={"epochs": 1})
    save_quantized(q, tmp_path / "q", spec)
    loaded = artifact.load(tmp_path / "q", trust_code=True)
    x = data.sample_input(8)
    q.compiled = loaded.compiled = False
    assert torch.equal(loaded(x), q(x))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_quantized_models_take_the_float_models_keyword_argument(
    backend, hand_cnn, mnist_net, make, data, mnist_data
):
    model, _ = hand_cnn()  # forward(self, images)
    q = make(model, backend, mode="static")
    x = data.sample_input(4)
    assert torch.equal(q(images=x), q(x))
    with pytest.raises(TypeError, match="missing a required argument: 'images'"):
        q(x=x)  # the float model does not take `x` either
    with pytest.raises(TypeError, match="too many positional arguments"):
        q(x, x)
    mnist, _ = mnist_net  # forward(self, x)
    q = make(mnist, backend, mode="dynamic", data=mnist_data)
    x = mnist_data.sample_input(4)
    assert torch.equal(q(x=x), q(x))


def test_auto_records_a_candidate_that_fails_at_evaluation(mnist_net, mnist_data, measure_cfg):
    """torch.ao's int8 convs return channels-last tensors, which `x.view(-1, 320)` cannot view."""
    model, spec = mnist_net
    cfg = QuantizeStage(mode="static", backend="auto", references=[])
    q = quantize(model, cfg, mnist_data, measure=measure_cfg, spec=spec)
    by_backend = {c["backend"]: c for c in q.frugal_report["candidates"]}
    failed = by_backend["torch"]
    assert "view size is not compatible" in failed["error"] and "during evaluation" in failed["error"]
    assert not failed["chosen"] and "accuracy" not in failed
    assert all("accuracy" in by_backend[b] for b in ("pt2e", "onnxruntime"))
    assert q.frugal_runtime != "torch-ao-int8"
    with pytest.raises(
        UnsupportedError, match=r"^backend torch cannot static-quantize MnistNet: RuntimeError: view"
    ):
        quantize(
            model,
            QuantizeStage(mode="static", backend="torch", references=[]),
            mnist_data,
            measure=measure_cfg,
        )


def test_quantize_stage_on_a_quantized_model_says_to_quantize_the_float_parent(
    mnist_net, mnist_data, tmp_path
):
    model, spec = mnist_net
    half = quantize(model, QuantizeStage(mode="fp16"), None)
    cfg = QuantizeStage(name="int8", mode="static")
    ctx = StageContext(data=mnist_data, model_spec=spec, stage_dir=tmp_path / "int8")
    with pytest.raises(
        UnsupportedError, match=r"already quantized \(torch-fp16\); quantize the float model"
    ) as e:
        handler_for(cfg)(half, cfg, ctx)
    assert "parent" in str(e.value) and "\n" not in str(e.value)

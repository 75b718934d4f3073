"""Quantization composes with pruning: zeros stay zeros through QAT, stay off the disk in every
quantized format, and the stage counts its own nonzero weights."""

from __future__ import annotations

import pytest
import torch

from frugalml.compress.prune import UnstructuredPrune, prune
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.measure import MeasureConfig
from frugalml.train import TrainConfig

# latency is not what these tests check: the shortest timing
FAST = MeasureConfig(batch_sizes=[4], warmup_iters=1, warmup_seconds=0, iters=2, min_seconds=0, threads=1,
                     references=[])


def _size(d) -> int:
    return sum(f.stat().st_size for f in d.iterdir())


@pytest.mark.parametrize(("mode", "backend"), [("static", "torch"), ("static", "onnxruntime"), ("dynamic", "torch"),
                                               ("weight-only", "torch")])
def test_quantizing_a_pruned_model_does_not_write_it_dense(mode, backend, mlp, data, tmp_path):
    model, spec = mlp
    sparse = prune(model, UnstructuredPrune(ratio=0.9), data)
    cfg = QuantizeStage(mode=mode, backend=backend, references=[])
    dense_q = quantize(model, cfg, data, spec=spec, measure=FAST)
    sparse_q = quantize(sparse, cfg, data, spec=spec, measure=FAST)
    save_quantized(dense_q, tmp_path / "dense", spec)
    save_quantized(sparse_q, tmp_path / "sparse", spec)
    assert _size(tmp_path / "sparse") < 0.55 * _size(tmp_path / "dense"), (mode, backend)


def test_qat_keeps_pruning_masks_and_counts_its_own_nonzeros(mlp, data):
    model, spec = mlp
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    nonzero = sum(int((p != 0).sum()) for p in sparse.parameters())
    q = quantize(sparse, QuantizeStage(mode="qat", backend="torch", qat={"epochs": 1, "lr": 0.05}, references=[]),
                 data, spec=spec, train=TrainConfig(epochs=1, batch_size=64), measure=FAST)
    own = q.nonzero_params()
    assert own is not None and own <= nonzero  # nothing regrew (a few int8 weights may round to zero)
    assert own > 0.8 * nonzero


def test_nonzero_count_comes_from_the_quantized_weights_not_the_float_model(mlp, data):
    model, spec = mlp
    q = quantize(model, QuantizeStage(mode="static", backend="torch", references=[]), data, spec=spec, measure=FAST)
    with torch.no_grad():
        for m in q.module.modules():  # zero a quantized layer's weights behind the float model's back
            if hasattr(m, "weight") and callable(m.weight) and hasattr(m, "set_weight_bias"):
                w = m.weight()
                m.set_weight_bias(torch.quantize_per_channel(torch.zeros_like(w.dequantize()), w.q_per_channel_scales(),
                                                             w.q_per_channel_zero_points(), 0, torch.qint8), m.bias())
                break
    floats = sum(int((p != 0).sum()) for p in model.parameters())
    assert q.nonzero_params() < floats


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_an_onnx_artifact_counts_its_nonzeros_from_its_graph_after_loading(mode, cnn, data, tmp_path):
    """Loaded, an ONNX Runtime artifact's float model is a zeroed skeleton: counting it gave `frugal
    measure` a nonzero count of a handful of weights for a whole pruned CNN."""
    from frugalml import artifact

    model, spec = cnn
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    nonzero = sum(int((p != 0).sum()) for p in sparse.parameters())
    q = quantize(sparse, QuantizeStage(mode=mode, backend="onnxruntime", references=[]), data, spec=spec, measure=FAST)
    save_quantized(q, tmp_path / "q", spec)
    loaded = artifact.load(tmp_path / "q")
    assert loaded.nonzero_params() == q.nonzero_params()
    assert 0.8 * nonzero < loaded.nonzero_params() <= 1.05 * nonzero


@pytest.mark.parametrize("mode", ["static", "weight-only"])
def test_a_torch_artifact_counts_the_same_nonzeros_after_loading(mode, cnn, data, tmp_path):
    """Loaded, the float model behind a torch int8 artifact is a zeroed skeleton: its biases and norms
    must be counted by shape, not as nonzeros, or the loaded model reports fewer weights than it saved."""
    from frugalml import artifact

    model, spec = cnn
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    q = quantize(sparse, QuantizeStage(mode=mode, backend="torch", references=[]), data, spec=spec, measure=FAST)
    save_quantized(q, tmp_path / "q", spec)
    loaded = artifact.load(tmp_path / "q")
    assert q.nonzero_params() is not None
    assert loaded.nonzero_params() == q.nonzero_params()
    vectors = sum(p.numel() for p in sparse.parameters() if p.dim() < 2)
    assert loaded.nonzero_params() > vectors  # the kernels' nonzeros are counted too

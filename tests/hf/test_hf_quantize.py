"""Every quantization mode and backend on a tiny BERT with named integer inputs: each one either
works (close to float, token ids reaching the embeddings as int64, the artifact round-trips) or says
in one line why not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frugalml import artifact
from frugalml.compress.quantize import QuantizeStage, quantize, save_quantized
from frugalml.compress.quantize.embedding import Int8Embedding
from frugalml.errors import UnsupportedError
from frugalml.measure import MeasureConfig

FAST = MeasureConfig(batch_sizes=[4], warmup_iters=1, warmup_seconds=0, iters=2, min_seconds=0, threads=1,
                     references=[])
CASES = [
    ("dynamic", "torch", {}), ("dynamic", "onnxruntime", {}), ("dynamic", "pt2e", {}),
    ("static", "onnxruntime", {"observer": "histogram"}), ("static", "onnxruntime", {"observer": "minmax"}),
    ("static", "pt2e", {"observer": "minmax"}), ("static", "torch", {"observer": "minmax"}),
    ("weight-only", "torch", {"bits": 8}), ("weight-only", "torch", {"bits": 4}),
    ("dynamic", "onnxruntime", {"smooth": 0.85}), ("static", "onnxruntime", {"observer": "minmax", "smooth": 0.85}),
    ("fp16", "torch", {}), ("bf16", "torch", {}),
]
# what must reach which fidelity (mean cosine to the float model); int4 weights are coarse on a 32-wide model
MIN_COSINE = {"bits4": 0.9}


def _embedding_inputs(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for m in module.modules():
        if isinstance(m, (torch.nn.Embedding, Int8Embedding)):
            m.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    return seen


@pytest.mark.parametrize(("mode", "backend", "extra"), CASES, ids=lambda v: str(v) if not isinstance(v, dict) else
                         "-".join(f"{k}{w}" for k, w in v.items()))
def test_mode_backend_on_named_integer_inputs(mode, backend, extra, encoder, bound, tmp_path):
    cfg = QuantizeStage(mode=mode, backend=backend, calibration_batches=2, calibration_batch_size=8,
                        references=[], **extra)
    try:
        q = quantize(encoder, cfg, bound, measure=FAST, spec=encoder.frugal_spec)
    except UnsupportedError as e:  # a backend that cannot take the model says so in one line
        assert "\n" not in str(e) and backend in str(e)
        pytest.skip(f"{mode}/{backend}: {e}")
    x = bound.x_test[:8]
    seen = _embedding_inputs(q.module) if hasattr(q, "module") and isinstance(q.module, torch.nn.Module) else []
    with torch.no_grad():
        out, ref = q(x), encoder(x)
    for ids in seen[:1]:  # the word embeddings see the exact int64 token ids
        assert ids.dtype == torch.int64 and torch.equal(ids, x["input_ids"])
    assert out.shape == ref.shape and out.dtype == torch.float32
    floor = MIN_COSINE.get("bits4" if extra.get("bits") == 4 else "", 0.98)
    assert float(F.cosine_similarity(out, ref).mean()) >= floor
    if q.frugal_report.get("embeddings"):
        assert q.frugal_report["embeddings"].startswith("int8")
    save_quantized(q, tmp_path / "q", encoder.frugal_spec)
    loaded = artifact.load(tmp_path / "q", trust_code=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out, atol=2e-3, rtol=0)


def test_onnx_int8_keeps_int64_graph_inputs_and_embeddings_in_the_size(encoder, bound, tmp_path):
    q = quantize(encoder, QuantizeStage(mode="dynamic", backend="onnxruntime", references=[]), bound, measure=FAST)
    inputs = {i.name: i.type for i in q.session().get_inputs()}
    assert inputs == {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"}
    save_quantized(q, tmp_path / "q", encoder.frugal_spec)
    artifact.save(encoder, tmp_path / "f")
    weights = sum(p.stat().st_size for p in (tmp_path / "q").glob("initializers.safetensors*"))
    size = sum(p.stat().st_size for p in (tmp_path / "q").iterdir())
    float_size = sum(p.stat().st_size for p in (tmp_path / "f").iterdir())
    # embeddings included: the table is most of this model's weights and is stored int8
    assert weights < float_size / 3.5
    # the rest is the graph (node and tensor names, ~45 kB here; negligible on a real model)
    assert size < float_size / 2.5


def test_onnx_runtime_writes_nothing_into_the_working_directory(encoder, bound, tmp_path, monkeypatch):
    """ONNX Runtime's shape inference writes temporary files into the current directory: they must
    land in frugalml's temporary folder, never in the user's."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    quantize(encoder, QuantizeStage(mode="dynamic", backend="onnxruntime", references=[]), bound, measure=FAST)
    quantize(encoder, QuantizeStage(mode="static", backend="onnxruntime", references=[]), bound, measure=FAST)
    assert list(cwd.iterdir()) == []

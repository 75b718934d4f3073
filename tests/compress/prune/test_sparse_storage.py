"""The torch-sparse artifact format: bit-identical round trips, dense fallback, clear corruption errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from frugalml import artifact
from frugalml.compress import sparse_storage
from frugalml.compress.sparse_storage import WEIGHTS_FILE, decode, encode, save_sparse
from frugalml.errors import ArtifactError
from frugalml.models import build_model

SPEC = {"name": "mlp", "kwargs": {}, "input_shape": [1, 8, 8], "num_classes": 3}


def _sparse_mlp(sparsity: float = 0.9) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 3).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_((torch.rand_like(p) > sparsity).float())
                p.masked_fill_(p == 0, 0.0)
    return model


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_encode_decode_is_bit_identical(dtype, tmp_path):
    t = torch.zeros(40, 10, dtype=dtype)
    t[0, :5] = torch.tensor([1.5, -2.0, float("nan"), float("inf"), -float("inf")]).to(dtype)
    t[3, 3] = -0.0  # the sign of a negative zero is part of the bits
    t[7] = torch.randn(10).to(dtype)
    state = {"w": t, "b": torch.randn(3).to(dtype), "n": torch.tensor(7), "s": torch.tensor(2.0)}
    tensors, layout = encode(state)
    assert set(layout) == {"w"}  # only the tensor that profits is encoded
    assert "w" not in tensors and "w::mask" in tensors and tensors["w::values"].numel() == 15
    out = decode(tensors, layout, tmp_path)
    for k, v in state.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert torch.equal(_bits(out[k]) if v.is_floating_point() else out[k],
                           _bits(v) if v.is_floating_point() else v), k  # fmt: skip


def test_dense_tensors_stay_dense():
    tensors, layout = encode({"w": torch.randn(64, 64)})
    assert layout == {} and set(tensors) == {"w"}


def test_save_load_round_trip_and_size(tmp_path):
    model = _sparse_mlp()
    save_sparse(model, tmp_path / "s", SPEC, meta={"note": "kept"})
    artifact.save(model, tmp_path / "d", SPEC)
    info = artifact.read_info(tmp_path / "s")
    assert info["format"] == "torch-sparse" and info["note"] == "kept" and info["sparse_layout"]
    loaded = artifact.load(tmp_path / "s")
    for k, v in model.state_dict().items():
        assert torch.equal(_bits(loaded.state_dict()[k]), _bits(v)), k
    size = lambda d: sum(f.stat().st_size for f in artifact.artifact_files(d))  # noqa: E731
    assert size(tmp_path / "s") < size(tmp_path / "d") / 4
    assert [f.name for f in artifact.artifact_files(tmp_path / "s")] == ["model.json", WEIGHTS_FILE]


def test_save_any_dispatches_to_the_sparse_saver(tmp_path):
    assert artifact.SAVERS["torch-sparse"] is sparse_storage.save_sparse
    model = _sparse_mlp()
    artifact.save_any(model, tmp_path, SPEC, {"format": "torch-sparse"})
    assert (tmp_path / WEIGHTS_FILE).is_file() and not (tmp_path / "model.safetensors").exists()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(artifact.load(tmp_path)(x), model(x))


def test_refuses_models_that_still_carry_masks(tmp_path):
    model = build_model("mlp", (1, 8, 8), 3)
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    torch_prune.l1_unstructured(first_linear, "weight", amount=0.5)
    with pytest.raises(ArtifactError, match="prune.remove"):
        save_sparse(model, tmp_path, SPEC)


def test_corrupt_files_are_artifact_errors(tmp_path):
    save_sparse(_sparse_mlp(), tmp_path, SPEC)
    info_path = tmp_path / "model.json"
    info = json.loads(info_path.read_text())
    name = next(iter(info["sparse_layout"]))
    info["sparse_layout"][name]["shape"][0] += 8  # more mask bits than stored values
    info_path.write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match=name):
        artifact.load(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="corrupt"):
        artifact.load(tmp_path)

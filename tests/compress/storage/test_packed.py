"""The torch-packed artifact format: bit-identical round trips, real size savings on sparse models,
clear corruption errors; and quantization keeps a pruned model's zeros on disk."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from frugalml import artifact
from frugalml.compress.storage.packed import FORMAT, WEIGHTS_FILE, save_packed
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


def _weights(d):
    """The packed weights file (`.zst`-wrapped when zstd made it smaller)."""
    (found,) = [f for f in d.iterdir() if f.name.startswith(WEIGHTS_FILE)]
    return found


def _size(d) -> int:
    return sum(f.stat().st_size for f in artifact.artifact_files(d))


def test_save_load_round_trip_and_size(tmp_path):
    model = _sparse_mlp()
    save_packed(model, tmp_path / "s", SPEC, meta={"note": "kept"})
    artifact.save(model, tmp_path / "d", SPEC)
    info = artifact.read_info(tmp_path / "s")
    assert info["format"] == FORMAT and info["note"] == "kept"
    loaded = artifact.load(tmp_path / "s")
    for k, v in model.state_dict().items():
        assert torch.equal(_bits(loaded.state_dict()[k]), _bits(v)), k
    # 10% nonzeros: beyond the 1-bit-per-weight bitmask's cap of 32x on the weights
    assert _size(tmp_path / "s") < _size(tmp_path / "d") / 6
    assert [f.name for f in artifact.artifact_files(tmp_path / "s")] in (
        ["model.json", WEIGHTS_FILE], ["model.json", WEIGHTS_FILE + ".zst"])


def test_save_any_dispatches_to_the_packed_saver(tmp_path):
    model = _sparse_mlp()
    artifact.save_any(model, tmp_path, SPEC, {"format": FORMAT})
    assert _weights(tmp_path).name.startswith(WEIGHTS_FILE) and not (tmp_path / "model.safetensors").exists()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(artifact.load(tmp_path)(x), model(x))


def test_dense_models_round_trip_too(tmp_path):
    model = build_model("cnn", (1, 8, 8), 3, channels=[4, 8]).eval()
    save_packed(model, tmp_path, build_model("cnn", (1, 8, 8), 3, channels=[4, 8]).frugal_spec)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(artifact.load(tmp_path)(x), model(x))


def test_refuses_models_that_still_carry_masks(tmp_path):
    model = build_model("mlp", (1, 8, 8), 3)
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    torch_prune.l1_unstructured(first_linear, "weight", amount=0.5)
    with pytest.raises(ArtifactError, match="prune.remove"):
        save_packed(model, tmp_path, SPEC)


def test_corrupt_files_are_artifact_errors(tmp_path):
    from safetensors.torch import save_file

    from frugalml.compress.storage.packed import LAYOUT_KEY, file_metadata, read_packed

    save_packed(_sparse_mlp(), tmp_path, SPEC)
    path = tmp_path / WEIGHTS_FILE
    tensors, layout = read_streams(path), json.loads(file_metadata(path)[LAYOUT_KEY])
    for f in tmp_path.glob(WEIGHTS_FILE + "*"):
        f.unlink()
    name = next(iter(layout))
    layout[name]["shape"][0] += 8
    save_file(tensors, str(path), metadata={LAYOUT_KEY: json.dumps(layout)})
    with pytest.raises(ArtifactError, match=name):
        artifact.load(tmp_path)
    save_file(tensors, str(path), metadata={})
    with pytest.raises(ArtifactError, match="no storage layout"):
        read_packed(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="corrupt"):
        artifact.load(tmp_path)
    path.unlink()
    (tmp_path / (WEIGHTS_FILE + ".zst")).write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(ArtifactError, match="corrupt zstd"):
        artifact.load(tmp_path)


def read_streams(path):
    """The stored (encoded) tensors of a packed file, zstd-wrapped or not."""
    from safetensors.torch import load

    from frugalml.compress.storage.packed import _blob

    return load(_blob(path))


def test_a_stale_twin_is_never_read_instead_of_the_weights(tmp_path):
    """A save removes an earlier save's file of the other kind (plain vs .zst), and a folder holding
    both (an interrupted save) is an error, not a silent load of old weights."""
    from frugalml.compress.storage.packed import ZST, read_packed, write_packed

    path = tmp_path / WEIGHTS_FILE
    zpath = tmp_path / (WEIGHTS_FILE + ZST)
    weights = {"w": torch.zeros(64, 64)}
    for stale in (path, zpath):
        stale.write_bytes(b"an earlier save")
        written = write_packed(path, weights)
        assert [f.name for f in tmp_path.iterdir()] == [written.name]
        assert torch.equal(read_packed(path)["w"], weights["w"])
    other = zpath if written == path else path
    other.write_bytes(b"left over")
    with pytest.raises(ArtifactError, match="both .* exist"):
        read_packed(path)

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save

from frugalml import artifact
from frugalml.errors import ArtifactError
from frugalml.measure.size import compress, size_metrics, weights_bytes


def test_size_is_safetensors_bytes_of_state_dict():
    m = nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.Linear(16, 4))
    r = size_metrics(m, None)
    assert r["size_bytes"] == len(save({k: v.contiguous() for k, v in m.state_dict().items()}))
    assert r["compression"] == "zstd-19"
    assert weights_bytes(m) == sum(v.numel() * v.element_size() for v in m.state_dict().values())


def test_sparse_model_compresses_below_its_size():
    torch.manual_seed(0)
    m = nn.Linear(256, 128)
    dense = size_metrics(m, None)
    with torch.no_grad():
        m.weight[torch.rand_like(m.weight) < 0.9] = 0.0
    sparse = size_metrics(m, None)
    assert sparse["size_bytes"] == dense["size_bytes"]  # raw bytes do not see zeros
    assert sparse["compressed_bytes"] < sparse["size_bytes"] * 0.5
    assert sparse["compressed_bytes"] < dense["compressed_bytes"]


def test_artifact_size_is_sum_of_files(tmp_path):
    m = nn.Linear(8, 3)
    spec = {"name": "mlp", "kwargs": {}, "input_shape": [1, 2, 4], "num_classes": 3}
    d = artifact.save(m, tmp_path / "art", spec)
    (d / "metrics.json").write_text("{}")  # not part of the artifact
    files = artifact.artifact_files(d)
    r = size_metrics(m, files)
    assert r["size_bytes"] == sum(p.stat().st_size for p in files)
    assert r["compressed_bytes"] == compress(b"".join(p.read_bytes() for p in files))[0]
    assert "model.safetensors" in r["size_method"] and "metrics.json" not in r["size_method"]


def test_missing_artifact_file_is_a_user_error(tmp_path):
    with pytest.raises(ArtifactError, match="missing.*nope"):
        size_metrics(None, [tmp_path / "nope"])


def test_no_model_no_artifact_gives_nones():
    assert size_metrics(None, None)["size_bytes"] is None


def test_ao_quantized_model_is_sized_by_its_int8_storage():
    import warnings

    from torch.ao.quantization import quantize_dynamic

    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    float_weights = (64 * 32 + 32 * 8) * 4
    int8_weights = 64 * 32 + 32 * 8
    assert weights_bytes(q) >= int8_weights
    assert weights_bytes(q) < weights_bytes(m) - float_weights // 2
    assert size_metrics(q, None)["size_bytes"] < size_metrics(m, None)["size_bytes"]

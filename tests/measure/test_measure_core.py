import numpy as np
import pytest
import torch
import torch.nn as nn

from frugalml.measure import MeasureConfig, measure

KEYS = {
    "accuracy",
    "per_class_accuracy",
    "params",
    "nonzero_params",
    "macs",
    "flops",
    "size_bytes",
    "compressed_bytes",
    "compression",
    "latency_ms",
    "throughput_sps",
    "peak_memory_bytes",
    "peak_memory_method",
    "runtime",
    "threads",
    "energy_mj_per_sample",
    "achieved_gflops",
    "pct_of_peak_gflops",
    "peak_gemm_gflops",
}


def _manual_accuracy(model, bundle):
    with torch.no_grad():
        pred = model(bundle.x_test).argmax(1)
    per_class = [float((pred[bundle.y_test == c] == c).float().mean()) for c in range(bundle.num_classes)]
    return float((pred == bundle.y_test).float().mean()), per_class


def test_measure_reports_every_key(tiny_cnn, bundle, fast_cfg, fake_gemm):
    r = measure(tiny_cnn.eval(), bundle, fast_cfg)
    assert KEYS <= set(r)
    acc, per_class = _manual_accuracy(tiny_cnn, bundle)
    assert r["accuracy"] == pytest.approx(acc)
    assert r["per_class_accuracy"] == pytest.approx(per_class)
    assert r["macs"] == 4 * 8 * 8 * 9 + 4 * 8 * 8 * 3 and r["flops"] == 2 * r["macs"]
    assert set(r["latency_ms"]) == {"b1", "b64"}
    for lat in r["latency_ms"].values():
        assert set(lat) == {"median", "p90", "mean", "min", "iterations"} and lat["iterations"] == 3
    assert r["throughput_sps"] == pytest.approx(64 / (r["latency_ms"]["b64"]["median"] / 1000))
    assert r["peak_memory_bytes"] > r["weights_bytes"] > 0 and "profiler" in r["peak_memory_method"]
    assert r["energy_mj_per_sample"]["estimated"] in (True, False) and r["energy_mj_per_sample"]["value"] > 0
    assert r["threads"] == 1 and r["runtime"] == "torch-eager"
    assert r["peak_gemm_gflops"] == 100.0
    assert r["achieved_gflops"] == pytest.approx(r["flops"] * r["throughput_sps"] / 1e9)
    assert r["pct_of_peak_gflops"] == pytest.approx(r["achieved_gflops"])  # peak is 100


def test_measure_does_not_mutate(tiny_cnn, bundle, fast_cfg, fake_gemm):
    tiny_cnn.train()
    tiny_cnn[3].eval()  # mixed modes must come back exactly
    modes = [m.training for m in tiny_cnn.modules()]
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    threads = torch.get_num_threads()
    measure(tiny_cnn, bundle, fast_cfg)
    assert [m.training for m in tiny_cnn.modules()] == modes
    after = tiny_cnn.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in tiny_cnn.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_cnn.modules())
    assert torch.get_num_threads() == threads


def test_predict_numpy_callable_without_model(tiny_cnn, bundle, fast_cfg, fake_gemm):
    tiny_cnn.eval()
    calls = []

    def predict(x: torch.Tensor) -> np.ndarray:
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        calls.append(len(x))
        with torch.no_grad():
            return tiny_cnn(x).numpy()

    r = measure(None, bundle, fast_cfg, predict=predict, runtime="onnxruntime")
    assert r["accuracy"] == pytest.approx(_manual_accuracy(tiny_cnn, bundle)[0])
    assert r["params"] is None and r["macs"] is None and r["achieved_gflops"] is None
    assert r["size_bytes"] is None and r["runtime"] == "onnxruntime"
    assert r["latency_ms"]["b64"]["iterations"] == 3 and 64 in calls

    with_model = measure(tiny_cnn, bundle, fast_cfg, predict=predict)
    assert with_model["params"] == sum(p.numel() for p in tiny_cnn.parameters())
    assert with_model["macs"] > 0 and with_model["accuracy"] == r["accuracy"]


def test_optional_parts_can_be_skipped(tiny_cnn, bundle, fake_gemm):
    cfg = MeasureConfig(
        threads=1,
        batch_sizes=[2],
        warmup_iters=0,
        warmup_seconds=0,
        iters=2,
        min_seconds=0,
        accuracy=False,
        roofline=False,
    )
    r = measure(tiny_cnn, bundle, cfg)
    assert r["accuracy"] is None and r["per_class_accuracy"] is None
    assert r["peak_gemm_gflops"] is None and r["pct_of_peak_gflops"] is None
    assert set(r["latency_ms"]) == {"b2"} and fake_gemm == []
    assert r["energy_mj_per_sample"]["batch_size"] == 2


def test_artifact_dir_sizes_the_files(tiny_cnn, bundle, fast_cfg, fake_gemm, tmp_path):
    from frugalml import artifact

    spec = {"name": "cnn", "kwargs": {}, "input_shape": [1, 8, 8], "num_classes": 3}
    d = artifact.save(tiny_cnn, tmp_path / "a", spec)
    r = measure(tiny_cnn, bundle, fast_cfg, files=artifact.artifact_files(d))
    assert r["size_bytes"] == sum(p.stat().st_size for p in artifact.artifact_files(d))


def test_sequence_model_reports_fallback_method(bundle, fast_cfg, fake_gemm):
    class RowLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            out, _ = self.lstm(x.squeeze(1))
            return self.head(out[:, -1])

    r = measure(RowLSTM(), bundle, fast_cfg)
    assert r["macs"] == 8 * 4 * 6 * (8 + 6) + 6 * 3
    assert "LSTM" in r["flops_method"]


def test_measure_needs_something_to_measure(bundle):
    with pytest.raises(ValueError):
        measure(None, bundle)

import torch

from frugalml.measure import MeasureConfig, measure_latency


def test_latency_respects_iteration_floors_and_restores_threads():
    calls = []
    cfg = MeasureConfig(threads=1, warmup_iters=2, warmup_seconds=0, iters=3, min_seconds=0)
    before = torch.get_num_threads()
    r = measure_latency(lambda x: calls.append(x.shape) or x * 2, torch.ones(4, 3), cfg)
    assert len(calls) == 2 + 3
    assert r["iterations"] == 3
    assert set(r) >= {"median", "p90", "mean", "min", "iterations", "cpu_seconds", "threads"}
    assert 0 <= r["min"] <= r["median"] <= r["p90"]
    assert r["min"] <= r["mean"]
    assert r["threads"] == 1 and torch.get_num_threads() == before


def test_latency_runs_under_inference_mode_with_requested_threads():
    seen = []
    cfg = MeasureConfig(threads=1, warmup_iters=0, warmup_seconds=0, iters=2, min_seconds=0)
    measure_latency(
        lambda x: seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads())), 0, cfg
    )
    assert seen == [(True, 1), (True, 1)]


def test_min_seconds_extends_iterations():
    cfg = MeasureConfig(threads=1, warmup_iters=0, warmup_seconds=0, iters=1, min_seconds=0.05)
    r = measure_latency(lambda x: sum(range(1000)), None, cfg)
    assert r["iterations"] > 1
    assert r["wall_seconds"] >= 0.05

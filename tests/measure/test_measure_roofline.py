import json

from frugalml.measure import peak_gemm_gflops, roofline


def test_peak_gemm_cached_and_reused(fake_gemm, tmp_path):
    sizes = len(roofline.GEMM_SIZES)
    assert peak_gemm_gflops(1) == 100.0
    assert len(fake_gemm) == sizes
    cache = json.loads((tmp_path / "cache" / "peak_gemm.json").read_text())
    (key,) = cache
    assert "threads=1" in key and cache[key]["gflops"] == 100.0

    assert peak_gemm_gflops(1) == 100.0
    assert len(fake_gemm) == sizes  # second call read the cache

    peak_gemm_gflops(2)  # another thread count is another entry
    assert len(fake_gemm) == 2 * sizes
    assert len(json.loads((tmp_path / "cache" / "peak_gemm.json").read_text())) == 2


def test_corrupt_cache_is_remeasured(fake_gemm, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "peak_gemm.json").write_text("{not json")
    assert peak_gemm_gflops(1) == 100.0 and len(fake_gemm) == len(roofline.GEMM_SIZES)


def test_peak_is_the_best_of_the_probed_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(roofline, "GEMM_SIZES", (256, 1024, 512))
    monkeypatch.setattr(roofline, "_time_gemm", lambda n, threads: n / 8)  # larger n runs faster here
    assert peak_gemm_gflops(1) == 128.0


def test_real_gemm_timing_is_positive(monkeypatch):
    monkeypatch.setattr(roofline, "MIN_SECONDS", 0.0)
    assert roofline._time_gemm(64, 1) > 0

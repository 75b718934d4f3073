"""Peak fp32 GEMM throughput of this CPU, the 'roof' a model's achieved GFLOP/s is compared with.

Measured once per (cpu model, threads, torch version) and cached as JSON in
$FRUGALML_CACHE_DIR (default ~/.cache/frugalml)/peak_gemm.json, because it takes about a second
and does not change between runs on the same machine.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from frugalml._io import atomic_write_json
from frugalml.measure.env import cpu_model, default_threads, use_threads

# the best of several sizes: one size alone under-reads the peak (too small: overheads; too large:
# cache misses), and a model's convs can then appear to beat the "peak"
GEMM_SIZES = (1024, 2048)
MIN_REPEATS = 5
MIN_SECONDS = 0.5
METHOD = "best median of fp32 torch.mm at n=1024 and n=2048"


def cache_dir() -> Path:
    env = os.environ.get("FRUGALML_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "frugalml"


def _time_gemm(n: int, threads: int) -> float:
    """GFLOP/s of an n x n fp32 matmul: median of repeated timed runs after warm-up."""
    with use_threads(threads), torch.inference_mode():
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        out = torch.empty(n, n)
        for _ in range(2):
            torch.mm(a, b, out=out)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < MIN_REPEATS or time.perf_counter() - start < MIN_SECONDS:
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def _cache_key(threads: int) -> str:
    return f"{cpu_model()}|threads={threads}|torch={torch.__version__}|sizes={','.join(map(str, GEMM_SIZES))}"


def peak_gemm_gflops(threads: int | None = None) -> float:
    """Peak fp32 GEMM GFLOP/s with `threads` threads (default: all available), cached."""
    n_threads = threads or default_threads()
    path = cache_dir() / "peak_gemm.json"
    key = _cache_key(n_threads)
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("gflops"), (int, float)):
        return float(entry["gflops"])
    gflops = max(_time_gemm(n, n_threads) for n in GEMM_SIZES)
    cache[key] = {"gflops": gflops, "gemm_sizes": list(GEMM_SIZES), "dtype": "float32", "method": METHOD}
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only home must not fail a measurement; the value is still returned
    return gflops

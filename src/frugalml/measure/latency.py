"""Latency: warm up, then time single calls with perf_counter_ns and report robust statistics.

Both floors must be met (iteration count and seconds), so tiny models get many samples and big
models still get `iters`. The same input tensor is reused, so the timed loop allocates nothing
beyond what the model itself does. CPU time (process-wide, all threads) and, where readable, the
RAPL energy counter are taken over the timed loop for the energy estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from frugalml.measure.config import MeasureConfig
from frugalml.measure.energy import rapl_delta_uj, read_rapl_uj
from frugalml.measure.env import use_threads

LATENCY_KEYS = ("median", "p90", "mean", "min", "iterations")


def measure_latency(fn: Callable[[Any], Any], example_input: Any, cfg: MeasureConfig | None = None) -> dict:
    """Time `fn(example_input)`. Returns milliseconds: median, p90, mean, min; plus iterations,
    threads, cpu_seconds and wall_seconds of the timed loop, and rapl_uj (None without RAPL)."""
    cfg = cfg or MeasureConfig()
    with use_threads(cfg.threads) as threads, torch.inference_mode():
        start = time.perf_counter()
        done = 0
        while done < cfg.warmup_iters or time.perf_counter() - start < cfg.warmup_seconds:
            fn(example_input)
            done += 1

        min_ns = int(cfg.min_seconds * 1e9)
        times: list[int] = []
        rapl0, cpu0 = read_rapl_uj(), time.process_time()
        loop_start = time.perf_counter_ns()
        while len(times) < cfg.iters or time.perf_counter_ns() - loop_start < min_ns:
            t0 = time.perf_counter_ns()
            fn(example_input)
            times.append(time.perf_counter_ns() - t0)
        wall_ns = time.perf_counter_ns() - loop_start
        cpu_seconds = time.process_time() - cpu0
        rapl = rapl_delta_uj(rapl0, read_rapl_uj())

    ms = np.asarray(times, dtype=np.float64) / 1e6
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "iterations": len(times),
        "threads": threads,
        "cpu_seconds": cpu_seconds,
        "wall_seconds": wall_ns / 1e9,
        "rapl_uj": rapl,
    }

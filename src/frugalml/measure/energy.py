"""Energy per inferred sample.

Default: an estimate from CPU time. `time.process_time` sums CPU time over all of the process's
threads, so CPU-seconds x watts-per-core already accounts for the thread count (multiplying by
threads again would double count); idle-spinning worker threads are included, as their power is
real. When the RAPL package counter is readable (Intel/AMD Linux, usually root), a measured value
is reported instead; it covers the whole CPU package, other processes included.
"""

from __future__ import annotations

from pathlib import Path

RAPL_DIR = Path("/sys/class/powercap/intel-rapl:0")


def read_rapl_uj() -> int | None:
    try:
        return int((RAPL_DIR / "energy_uj").read_text().strip())
    except (OSError, ValueError):
        return None


def rapl_delta_uj(start: int | None, end: int | None) -> int | None:
    """Energy between two readings, allowing for one counter wrap-around."""
    if start is None or end is None:
        return None
    if end >= start:
        return end - start
    try:
        wrap = int((RAPL_DIR / "max_energy_range_uj").read_text().strip())
    except (OSError, ValueError):
        return None
    return end + wrap - start


def energy_per_sample(latency: dict, batch_size: int, watts_per_core: float) -> dict:
    """mJ per sample from one `measure_latency` result (with cpu_seconds, iterations, rapl_uj)."""
    samples = latency["iterations"] * batch_size
    cpu_s_per_sample = latency["cpu_seconds"] / samples
    estimate = {
        "value": cpu_s_per_sample * watts_per_core * 1000.0,
        "estimated": True,
        "method": f"cpu-time x {watts_per_core:g} W/core",
        "cpu_seconds_per_sample": cpu_s_per_sample,
        "batch_size": batch_size,
    }
    rapl = latency.get("rapl_uj")
    if rapl is None:
        return {**estimate, "method": estimate["method"] + " (estimate: no power meter on this machine)"}
    return {
        "value": rapl / 1000.0 / samples,
        "estimated": False,
        "method": "RAPL package (whole CPU package, other processes included)",
        "batch_size": batch_size,
        "cpu_time_estimate": {k: estimate[k] for k in ("value", "method")},
    }

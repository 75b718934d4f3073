"""Peak memory of one forward pass: resident weights + the peak of memory allocated during it.

Torch models: `torch.profiler` with profile_memory=True records each op's own allocations and
frees; replaying them in time order gives the peak live activation bytes (op granularity, so a
temporary allocated and freed inside one kernel is not seen). Other runtimes (a `predict`
callable such as ONNX Runtime) allocate outside torch, so there we reset the kernel's peak-RSS
mark (/proc/self/clear_refs) and read how far VmHWM rose above the RSS before the call; freed
memory that the allocator reuses is not seen, so that number is a lower bound.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("frugalml")

PROFILER_METHOD = "weights + torch.profiler peak of allocations during one forward (op granularity)"
RSS_METHOD = "weights + rise of peak RSS (VmHWM) during one call (lower bound)"


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Kineto writes 'USDT: profiler_start/stop' lines from C++ straight to fd 2; silence them."""
    sys.stderr.flush()
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _profiler_peak(fn: Callable[[Any], Any], x: Any) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(x)
    steps = []
    for e in prof.events():
        delta = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if delta:
            steps.append((e.time_range.start, delta))
    live = peak = 0
    for _, delta in sorted(steps, key=lambda s: s[0]):
        live += delta
        peak = max(peak, live)
    return peak


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _rss_peak(fn: Callable[[Any], Any], x: Any) -> int | None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak RSS mark
    except OSError:
        return None
    before = _status_kb("VmRSS")
    fn(x)
    after = _status_kb("VmHWM")
    if before is None or after is None:
        return None
    return max(0, after - before) * 1024


def peak_memory(fn: Callable[[Any], Any], x: Any, weights: int | None, *, torch_model: bool) -> dict:
    """{"peak_memory_bytes", "peak_activation_bytes", "weights_bytes", "peak_memory_method"}."""
    activation: int | None = None
    method = "unavailable"
    if torch_model:
        try:
            activation, method = _profiler_peak(fn, x), PROFILER_METHOD
        except RuntimeError as e:  # e.g. another profiler already active
            log.debug("profiler memory measurement failed: %s", e)
    if activation is None:
        activation = _rss_peak(fn, x)
        method = RSS_METHOD if activation is not None else "unavailable"
    total = None if activation is None else activation + (weights or 0)
    return {
        "peak_memory_bytes": total,
        "peak_activation_bytes": activation,
        "weights_bytes": weights,
        "peak_memory_method": method,
    }

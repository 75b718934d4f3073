"""The machine a measurement ran on, and the thread count it ran with."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx")


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def available_cores() -> int:
    """Cores this process may run on (affinity/cgroup pinning), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None when it does not say."""
    cores, phys = set(), "0"
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return len(cores) or None


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo): the one place frugalml reads the ISA."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_int8_dot() -> bool:
    """8-bit dot-product instructions (VNNI/AMX): without them u8*s8 int8 kernels can saturate 16-bit
    accumulators, so activations must use 7-bit ranges."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def has_native_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX512-BF16/AMX): elsewhere bf16 is emulated and slower than fp32
    (measured: 11x slower CNN training on an AVX2-only EPYC)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def isa_flags() -> dict[str, bool]:
    flags = cpu_flags()
    out = {f: f in flags for f in ISA_FLAGS if f != "amx"}
    out["amx"] = any(f.startswith("amx") for f in flags)
    out["avx512_bf16"] = "avx512_bf16" in flags
    return out


def default_threads() -> int:
    return available_cores()


@contextmanager
def use_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` intra-op threads (default: all available), then restore."""
    previous = torch.get_num_threads()
    n = threads or default_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def environment(threads: int | None = None) -> dict:
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    physical = physical_cores()
    return {
        "cpu": cpu_model(),
        "cores": physical or os.cpu_count(),
        "physical_cores": physical,
        "logical_cores": os.cpu_count(),
        "available_cores": available_cores(),
        "threads": threads or default_threads(),
        "isa": isa_flags(),
        "torch_cpu_capability": capability,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }

"""Measurement: the only source of the numbers frugalml reports (accuracy, cost, size, latency,
memory, energy, roofline). See docs/INTERFACES.md "frugalml.measure"."""

from frugalml.measure.config import MeasureConfig
from frugalml.measure.core import measure
from frugalml.measure.cost import count_flops, count_params
from frugalml.measure.env import environment
from frugalml.measure.latency import measure_latency
from frugalml.measure.roofline import peak_gemm_gflops

__all__ = [
    "MeasureConfig",
    "count_flops",
    "count_params",
    "environment",
    "measure",
    "measure_latency",
    "peak_gemm_gflops",
]

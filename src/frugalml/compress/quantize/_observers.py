"""Activation observers by name. torch.ao and torchao ship min/max and histogram (MSE search)
observers; a percentile clip is the histogram observer with a different range choice, so it reuses
the library's histogram and only replaces the step that picks the range from it."""

from __future__ import annotations

from functools import lru_cache

import torch


def _percentile_range(histogram: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, pct: float):
    """Clip range covering the central `pct` percent of the observed mass (upper tail only when
    the data are one-sided, e.g. after ReLU)."""
    hist = histogram.double()
    total = float(hist.sum())
    if total == 0 or float(hi) <= float(lo):
        return lo, hi
    cdf = torch.cumsum(hist, 0) / total
    tail = (100.0 - pct) / 100.0
    one_sided = float(lo) >= 0
    width = (hi - lo) / len(hist)
    upper_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail, dtype=cdf.dtype)))
    new_hi = lo + width * min(upper_bin + 1, len(hist))
    if one_sided:
        return lo, torch.minimum(new_hi, hi)
    lower_bin = int(torch.searchsorted(cdf, torch.tensor(tail, dtype=cdf.dtype)))
    return torch.maximum(lo + width * lower_bin, lo), torch.minimum(new_hi, hi)


@lru_cache
def percentile_observer(family: str, pct: float) -> type:
    """A HistogramObserver subclass of torch.ao (`family="torch"`) or torchao pt2e (`"torchao"`)."""
    if family == "torch":
        from torch.ao.quantization.observer import HistogramObserver
    else:
        from torchao.quantization.pt2e.observer import HistogramObserver

    class PercentileObserver(HistogramObserver):
        def _non_linear_param_search(self):  # the library's hook that picks (min, max) from the histogram
            return _percentile_range(self.histogram, self.min_val, self.max_val, pct)

    PercentileObserver.__name__ = PercentileObserver.__qualname__ = f"PercentileObserver{pct:g}".replace(
        ".", "_"
    )
    return PercentileObserver


def activation_observer(family: str, name: str, pct: float) -> type:
    """Observer class for `observer: minmax | histogram | percentile`."""
    if name == "percentile":
        return percentile_observer(family, pct)
    if family == "torch":
        from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver
    else:
        from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver
    return MinMaxObserver if name == "minmax" else HistogramObserver

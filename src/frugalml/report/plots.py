"""Accuracy-vs-latency and accuracy-vs-size plots with the Pareto front marked (matplotlib, PNG)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from frugalml._plot import png_bytes
from frugalml.report.compare import big_batch, lat, pareto_front, quality, quality_name  # noqa: E402

AXES = {
    "latency": ("latency at batch 64 (else the largest measured), median (ms)", lambda m: lat(m, "b64")),
    "size": ("artifact size, compressed (KiB)", lambda m: (m.get("compressed_bytes") or 0) / 1024 or None),
}


def pareto_plot(runs: list[tuple[str, list[dict]]], axis: str) -> bytes:
    """PNG bytes. `runs` is [(run label, stages)], several runs are drawn in one figure."""
    label, getter = AXES[axis]
    all_stages = [st for _, stages in runs for st in stages]
    if axis == "latency" and all_stages:
        label = f"latency at batch {big_batch(all_stages)[1:]}, median (ms)"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    pts, names = [], []
    for run_label, stages in runs:
        xs, ys = [], []
        for st in stages:
            x, y = getter(st["metrics"]), quality(st["metrics"])
            if x is None or y is None:
                continue
            xs.append(x)
            ys.append(100 * y)
            name = st["name"] if len(runs) == 1 else f"{run_label}/{st['name']}"
            pts.append((x, 100 * y))
            names.append(name)
            ax.annotate(name, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.scatter(xs, ys, label=run_label if len(runs) > 1 else None, zorder=3)
    front = sorted((pts[i] for i in pareto_front(pts)), key=lambda p: p[0])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
                linestyle="--", linewidth=1, label="Pareto front", zorder=2)
    ax.set_xlabel(label)
    metric = quality_name(all_stages)
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else f"test {metric} vs reference (×100)")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label (e.g. no stage with this axis' value)
        ax.legend(fontsize=8)
    return png_bytes(fig)

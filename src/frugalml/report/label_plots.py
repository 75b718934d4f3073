"""Label efficiency in reports: accuracy against labels used, and what the label-wise stages found.

A stage has label-budget data when its metrics say how many labels it trained with (`labels_used`,
written by transfer, semisup and label_issues) or when the run's data kept only some labels
(`data.unlabelled` in results.json: then every training stage used `data.train` labels). Across
several runs (one per budget) the points of a stage name join into one curve per method.
"""

from __future__ import annotations

from frugalml._plot import png_bytes
from frugalml.report.tables import _num

TRAINING_KINDS = ("train", "transfer", "semisup", "label_issues")


def labels_used(stage: dict, results: dict) -> int | None:
    m = stage.get("metrics") or {}
    if m.get("labels_used") is not None:
        return int(m["labels_used"])
    data = results.get("data") or {}
    if "unlabelled" in data and stage.get("kind") in TRAINING_KINDS:
        return int(data.get("train", 0))
    return None


def has_label_data(runs: list[tuple[str, dict]]) -> bool:
    return any(labels_used(st, res) is not None for _, res in runs for st in res.get("stages", []))


def label_points(runs: list[tuple[str, dict]]) -> dict[str, list[tuple[float, float, float | None]]]:
    """{stage name: [(labels used, accuracy %, None), ...]} sorted by labels."""
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for _, res in runs:
        for st in res.get("stages", []):
            n, acc = labels_used(st, res), (st.get("metrics") or {}).get("accuracy")
            if n is not None and acc is not None:
                series.setdefault(st["name"], []).append((float(n), 100 * float(acc), None))
    return {k: sorted(v) for k, v in series.items()}


def label_efficiency_plot(series: dict[str, list[tuple[float, float, float | None]]], title: str = "") -> bytes:
    """One line per method: accuracy (%) against labels used (log axis); error bars where a std is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, pts in series.items():
        xs, ys, err = [p[0] for p in pts], [p[1] for p in pts], [p[2] or 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=err if any(err) else None, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("labels used")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "label efficiency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return png_bytes(fig)


LABEL_COLUMNS = ["stage", "labels used", "accuracy", "pseudo-label quantity", "pseudo-label precision",
                 "label issues found", "issue recall", "issue precision"]


def label_rows(stages: list[dict], results: dict) -> list[list[str]]:
    rows = []
    for st in stages:
        n = labels_used(st, results)
        if n is None:
            continue
        m = st["metrics"]
        pl = (m.get("semisup") or {}).get("pseudo_labels") or {}
        li = m.get("label_issues") or {}
        pct = "{:.1f}%"
        rows.append([
            st["name"], str(n), _num(None if m.get("accuracy") is None else 100 * m["accuracy"], "{:.2f}%"),
            _num(None if pl.get("quantity") is None else 100 * pl["quantity"], pct),
            _num(None if pl.get("precision") is None else 100 * pl["precision"], pct),
            _num(li.get("found"), "{:.0f}"),
            _num(None if li.get("recall") is None else 100 * li["recall"], pct),
            _num(None if li.get("precision") is None else 100 * li["precision"], pct),
        ])
    return rows


def issue_images(results: dict) -> dict[str, str]:
    """{plot name: run-relative path} of the label-issue image grids the stages wrote."""
    return {f"label-issues-{st['name']}": st["metrics"]["label_issues"]["png"]
            for st in results.get("stages", []) if (st.get("metrics") or {}).get("label_issues", {}).get("png")}

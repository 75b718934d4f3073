"""Sensitivity analysis: prune one layer at a time at several ratios and measure the accuracy drop.

Structured: each row is one Torch-Pruning group (a layer plus everything coupled to it: its BN,
residual partners, consumers), named by its root layer and pruned alone with `pruning_ratio_dict`.
Unstructured: each row is one weight tensor, magnitude-pruned alone. The table (JSON + CSV) and a
plot of accuracy drop vs ratio per layer are written to a directory; the structured pruner reads
the JSON to choose per-layer ratios (`per_layer: sensitivity`).
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from frugalml._plot import png_bytes
from frugalml.compress.prune._layers import check_layer_names, classifier, selected, weight_params
from frugalml.errors import ConfigError
from frugalml.measure.task import task_of

DEFAULT_RATIOS = (0.1, 0.25, 0.5, 0.75)
TABLE_FILE = "sensitivity.json"


def _accuracy(model: nn.Module, x: Any, y: torch.Tensor, task: Any = None) -> float:
    """Top-1 accuracy, or the data's task quality (e.g. cosine to the reference embeddings)."""
    from frugalml.train import evaluate

    if task is not None and task.name != "classification":
        from frugalml.train.evaluate import eval_mode

        with eval_mode(model):
            return float(task.evaluate(model, x, y, 0)["quality"])
    return float(evaluate(model, x, y))


def _eval_split(data: Any, max_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (data.x_val, data.y_val) if len(data.y_val) else (data.x_test, data.y_test)
    return x[:max_samples], y[:max_samples]


def _structured_groups(model: nn.Module, data: Any, layers: Sequence[str] | None) -> list[tuple[str, int]]:
    """(root layer name, channels) of each prunable group, in model order."""
    from frugalml.compress.prune._tp_pruner import ROOT_TYPES, StructuredPruner

    probe = StructuredPruner(copy.deepcopy(model), data.sample_input(2), num_classes=data.num_classes,
                             importance="l1", ratio=0.0, iterative_steps=1, max_layer_ratio=0.99,
                             ignore=[], targets=None)
    dg = probe.pruner.DG
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    out = []
    for group in probe.groups():
        # name a group by its first layer in model order (tp's root is arbitrary)
        members = [dg._module2name[d.target.module] for d, _ in group
                   if isinstance(d.target.module, tuple(ROOT_TYPES)) and dg.is_out_channel_pruning_fn(d.handler)]
        name = min(members, key=lambda n: order.get(n, 0))
        if selected(name, layers, []):
            out.append((name, dg.get_out_channels(group[0].dep.target.module)))
    return sorted(out, key=lambda t: order.get(t[0], 0))


def _prune_group_copy(model: nn.Module, data: Any, layer: str, ratio: float) -> nn.Module:
    """A copy with only `layer`'s group pruned; raises _tp_pruner.BlockedGroup if that breaks it."""
    from frugalml.compress.prune._tp_pruner import StructuredPruner

    m = copy.deepcopy(model)
    pruner = StructuredPruner(m, data.sample_input(2), num_classes=data.num_classes, importance="l1",
                              ratio=0.0, iterative_steps=1, max_layer_ratio=0.99, ignore=[], targets=None,
                              ratio_by_layer={layer: ratio})
    pruner.step()
    return m


def sensitivity(
    model: nn.Module,
    data: Any,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    layers: Sequence[str] | None = None,
    method: str = "structured",
    *,
    out_dir: str | Path | None = None,
    max_samples: int = 2000,
) -> dict:
    """Accuracy drop of pruning each layer alone at each ratio, on the val split (test if no val).

    Returns `{"method", "base_accuracy", "ratios", "rows": [{layer, channels, ratio, accuracy,
    drop}]}`; with `out_dir`, also writes sensitivity.json, sensitivity.csv and sensitivity.png.
    """
    if method not in ("structured", "unstructured"):
        raise ConfigError(f"sensitivity method {method!r}; allowed: structured, unstructured")
    bad = [r for r in ratios if not 0 < r < 1]
    if bad or not ratios:
        raise ConfigError(f"sensitivity ratios must be in (0, 1), got {list(ratios)}")
    check_layer_names(model, layers, "layers")
    model = copy.deepcopy(model).eval()
    x, y = _eval_split(data, max_samples)
    task = task_of(data)
    base = _accuracy(model, x, y, task)
    rows = []
    skipped: dict[str, str] = {}
    if method == "structured":
        from frugalml.compress.prune._tp_pruner import BlockedGroup

        for name, channels in _structured_groups(model, data, layers):
            layer_rows = []
            try:
                for r in ratios:
                    acc = _accuracy(_prune_group_copy(model, data, name, r), x, y, task)
                    layer_rows.append({"layer": name, "channels": channels, "ratio": r, "accuracy": acc,
                                       "drop": base - acc})
            except BlockedGroup as b:  # this layer cannot be pruned: no rows, and the table says why
                skipped[name] = b.reason
                continue
            rows += layer_rows
    else:
        head, _ = classifier(model, data.num_classes)
        for name, mod, pname in weight_params(model, layers, []):
            w = getattr(mod, pname)
            original = w.detach().clone()
            for r in ratios:
                with torch.no_grad():
                    k = round(r * w.numel())
                    cut = original.abs().flatten().kthvalue(k).values if k else None
                    w.copy_(original if cut is None else original * (original.abs() > cut))
                acc = _accuracy(model, x, y, task)
                rows.append({"layer": f"{name}.{pname}" if pname != "weight" else name, "channels": w.numel(),
                             "ratio": r, "accuracy": acc, "drop": base - acc, "classifier": name == head})
            with torch.no_grad():
                w.copy_(original)
    table = {"method": method, "base_accuracy": base, "ratios": list(ratios), "samples": len(y), "rows": rows}
    if skipped:
        table["skipped"] = skipped
    if out_dir is not None:
        write_table(table, Path(out_dir))
    return table


def write_table(table: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / TABLE_FILE, table)
    buf = io.StringIO()
    fields = ["layer", "channels", "ratio", "accuracy", "drop"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table["rows"])
    atomic_write_text(out_dir / "sensitivity.csv", buf.getvalue())
    atomic_write_bytes(out_dir / "sensitivity.png", _plot(table))
    return out_dir / TABLE_FILE


def _plot(table: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    layers = list(dict.fromkeys(r["layer"] for r in table["rows"]))
    for layer in layers:
        pts = [(0.0, 0.0)] + [(r["ratio"], 100 * r["drop"]) for r in table["rows"] if r["layer"] == layer]
        ax.plot(*zip(*pts), marker="o", label=layer)
    ax.set_xlabel(f"{table['method']} pruning ratio of the layer alone")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title(f"pruning sensitivity (base accuracy {100 * table['base_accuracy']:.2f}%)")
    ax.grid(alpha=0.3)
    if len(layers) <= 16:
        ax.legend(fontsize=7, loc="upper left")
    return png_bytes(fig, dpi=100)


def read_table(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_FILE
    try:
        table = json.loads(path.read_text())
        _ = [(r["layer"], r["ratio"], r["drop"]) for r in table["rows"]]
    except FileNotFoundError:
        raise ConfigError(f"prune.sensitivity_table: {path} does not exist (write it with `frugal sensitivity`)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"prune.sensitivity_table: {path} is not a sensitivity table ({e})") from None
    return table


def _ratio_at(points: list[tuple[float, float]], tolerance: float) -> float:
    """Largest ratio whose (monotone, interpolated) drop stays within `tolerance`."""
    best, worst = 0.0, 0.0
    prev_r, prev_d = 0.0, 0.0
    for r, d in points:
        d = max(d, worst)  # drops never shrink with more pruning: clean up noise
        worst = d
        if d <= tolerance:
            best, prev_r, prev_d = r, r, d
            continue
        if d > prev_d:
            best = prev_r + (r - prev_r) * (tolerance - prev_d) / (d - prev_d)
        break
    return best


def allocate_ratios(table: dict, target: float, max_ratio: float) -> dict[str, float]:
    """Per-layer ratios whose channel-weighted mean is `target`, giving each layer the most pruning
    it tolerates under one shared accuracy-drop threshold (found by bisection)."""
    if table.get("method") != "structured":
        raise ConfigError("prune.sensitivity_table: per_layer ratios need a structured sensitivity table")
    curves: dict[str, list[tuple[float, float]]] = {}
    weights: dict[str, int] = {}
    for row in table["rows"]:
        curves.setdefault(row["layer"], []).append((float(row["ratio"]), float(row["drop"])))
        weights[row["layer"]] = int(row.get("channels") or 1)
    for pts in curves.values():
        pts.sort()
    total = sum(weights.values())

    def ratios(tol: float) -> dict[str, float]:
        return {k: min(max_ratio, max(0.0, _ratio_at(p, tol))) for k, p in curves.items()}

    def mean(rs: dict[str, float]) -> float:
        return sum(rs[k] * weights[k] for k in rs) / max(total, 1)

    lo, hi = -1e-9, 1.0 + max((d for p in curves.values() for _, d in p), default=0.0)
    if mean(ratios(hi)) < target:  # even the most tolerant threshold prunes less: scale up evenly
        rs = ratios(hi)
        scale = target / max(mean(rs), 1e-9)
        return {k: min(max_ratio, r * scale) for k, r in rs.items()}
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(ratios(mid)) < target else (lo, mid)
    # layers with equal drops jump together at one threshold: blend the two sides to hit the target
    below, above = ratios(lo), ratios(hi)
    gap = mean(above) - mean(below)
    alpha = (target - mean(below)) / gap if gap > 1e-12 else 1.0
    return {k: below[k] + alpha * (above[k] - below[k]) for k in curves}


def run_sensitivity(
    artifact_dir: str | Path,
    data_cfg: Any,
    out_dir: str | Path,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    method: str = "structured",
    trust_code: bool = False,
) -> Path:
    """CLI entry (`frugal sensitivity ARTIFACT --data SPEC`): load, analyse, write; returns the
    directory holding sensitivity.json, sensitivity.csv and sensitivity.png."""
    from frugalml import artifact
    from frugalml.data import load_data

    info = artifact.read_info(artifact_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the sensitivity table and plot")
    data = load_data(data_cfg)
    data.check_fits(info["spec"], f"artifact {artifact_dir}")
    model = artifact.load(artifact_dir, trust_code=trust_code)
    if getattr(model, "frugal_runtime", None) is not None:
        raise ConfigError(f"{artifact_dir}: holds a {model.frugal_runtime} model; sensitivity needs the float model")
    sensitivity(model, data, ratios, method=method, out_dir=out_dir)
    return Path(out_dir)

"""Derived figures for reports: ratios against the reference (first) stage and the parent stage.

Nothing here measures; it only divides numbers that frugalml.measure produced.
"""

from __future__ import annotations

from typing import Any

# a stage counts as "measurably faster" only if its median beats the parent's by this factor
# and its p90 is below the parent's median (the spread does not overlap)
FASTER_FACTOR = 1.05
# stage kinds whose point is to be cheaper: the report checks that they really are faster
COMPRESSING_KINDS = ("prune", "quantize", "lowrank")


def batch_key(latency: dict, batch: str = "b64") -> str:
    """`batch`, or (for the default b64, when a run measured other sizes, e.g. b32 for a transformer)
    the largest batch measured."""
    if batch in latency or batch != "b64" or not latency:
        return batch
    return max(latency, key=lambda k: int(k[1:]) if k[1:].isdigit() else -1)


def big_batch(stages: list[dict]) -> str:
    """The batch the "b64" columns and the latency plot show: b64, or the largest batch the run measured
    (b32 for a transformer), read from the first stage."""
    latency = (stages[0]["metrics"].get("latency_ms") or {}) if stages else {}
    return batch_key(latency, "b64")


def lat(metrics: dict, batch: str = "b64", q: str = "median") -> float | None:
    latency = metrics.get("latency_ms") or {}
    v = latency.get(batch_key(latency, batch), {}).get(q)
    return float(v) if v is not None else None


def quality(metrics: dict) -> float | None:
    """Top-1 accuracy, or for other tasks their quality metric (embedding: cosine to the reference)."""
    return metrics.get("accuracy") if metrics.get("accuracy") is not None else metrics.get("quality")


def quality_name(stages: list[dict]) -> str:
    """What `quality` is for these stages: 'accuracy', or e.g. 'cosine' (embedding task)."""
    names = {(s.get("metrics") or {}).get("quality_metric") for s in stages} - {None}
    return names.pop() if len(names) == 1 else "accuracy"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def best_reference(metrics: dict, batch: str = "b64") -> tuple[str | None, float | None]:
    """(runtime, median ms) of the fastest fp32 reference a stage measured (noted ones excluded)."""
    refs = metrics.get("reference_latency_ms") or {}
    notes = metrics.get("reference_notes") or {}
    usable = {k: v.get(batch_key(v, batch), {}).get("median") for k, v in refs.items()
              if k not in notes or k == "fp32-eager"}
    usable = {k: v for k, v in usable.items() if v}
    if not usable:
        return None, None
    best = min(usable, key=usable.__getitem__)
    return best, usable[best]


def fp32_weight_bytes(metrics: dict) -> float | None:
    """The dense fp32 weights of a model (4 bytes per parameter): what the literature's ratios divide."""
    return 4.0 * metrics["params"] if metrics.get("params") else None


def compare(stage: dict, ref: dict, parent: dict | None) -> dict[str, Any]:
    m, r = stage["metrics"], ref["metrics"]
    out: dict[str, Any] = {
        "accuracy_delta_pts": None if quality(m) is None or quality(r) is None
        else 100 * (quality(m) - quality(r)),  # type: ignore[operator]
        "speedup_b1": ratio(lat(r, "b1"), lat(m, "b1")),
        "speedup_b64": ratio(lat(r, "b64"), lat(m, "b64")),
        "size_ratio": ratio(r.get("size_bytes"), m.get("size_bytes")),
        "size_ratio_vs_fp32_weights": ratio(fp32_weight_bytes(r), m.get("size_bytes")),
        "compressed_ratio": ratio(r.get("compressed_bytes"), m.get("compressed_bytes")),
        "mac_ratio": ratio(r.get("macs"), m.get("macs")),
    }
    for b in ("b1", "b64"):  # end to end: against the best fp32 runtime of the model the run started from
        best, ms = best_reference(r, b)
        out[f"speedup_{b}_vs_best_fp32"] = ratio(ms, lat(m, b))
        out[f"best_fp32_runtime_{b}"] = best
    if parent is not None:
        p = parent["metrics"]
        out["speedup_b64_vs_parent"] = ratio(lat(p, "b64"), lat(m, "b64"))
        out["mac_ratio_vs_parent"] = ratio(p.get("macs"), m.get("macs"))
        out["size_ratio_vs_parent"] = ratio(p.get("size_bytes"), m.get("size_bytes"))
    return out


def warnings_for(stage: dict, parent: dict | None) -> list[str]:
    """Plain statements about claims a user might otherwise assume (e.g. 'pruned but not faster')."""
    if parent is None:
        return []
    m, p = stage["metrics"], parent["metrics"]
    warns = []
    if (m.get("size_bytes") or 0) > (p.get("size_bytes") or float("inf")):
        warns.append(f"its artifact is larger than {parent['name']}'s: {m['size_bytes']:,} vs {p['size_bytes']:,} bytes")
    fewer_macs = (p.get("macs") or 0) > 0 and (m.get("macs") or 0) < 0.95 * p["macs"]
    sparser = (m.get("nonzero_params") or 0) < 0.95 * (p.get("nonzero_params") or 0)
    if stage["kind"] in COMPRESSING_KINDS or fewer_macs or sparser:
        for b in ("b1", "b64"):
            pm, cm, cp90 = lat(p, b), lat(m, b), lat(m, b, "p90")
            if pm is None or cm is None:
                continue
            if cm * FASTER_FACTOR >= pm:
                test = f"median {cm:.3f} ms vs {pm:.3f} ms: less than {100 * (FASTER_FACTOR - 1):.0f}% faster"
            elif cp90 is not None and cp90 >= pm:
                test = (f"median {cm:.3f} ms vs {pm:.3f} ms is {pm / cm:.2f}x faster, but its p90 "
                        f"({cp90:.3f} ms) overlaps the parent's median: too noisy to call")
            else:
                continue
            why = ""
            if fewer_macs:
                why = f" although it has {p['macs'] / max(m['macs'], 1):.2f}x fewer MACs"
            elif sparser:
                why = " although it is sparser (zeros in dense tensors are still computed)"
            warns.append(f"not measurably faster than {parent['name']} at batch {b[1:]}{why}: {test}")
    return warns


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when minimising x (cost) and maximising y (accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front

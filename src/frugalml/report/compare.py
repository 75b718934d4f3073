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


def lat(metrics: dict, batch: str = "b64", q: str = "median") -> float | None:
    v = (metrics.get("latency_ms") or {}).get(batch, {}).get(q)
    return float(v) if v is not None else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compare(stage: dict, ref: dict, parent: dict | None) -> dict[str, Any]:
    m, r = stage["metrics"], ref["metrics"]
    out: dict[str, Any] = {
        "accuracy_delta_pts": None if m.get("accuracy") is None or r.get("accuracy") is None
        else 100 * (m["accuracy"] - r["accuracy"]),
        "speedup_b1": ratio(lat(r, "b1"), lat(m, "b1")),
        "speedup_b64": ratio(lat(r, "b64"), lat(m, "b64")),
        "size_ratio": ratio(r.get("size_bytes"), m.get("size_bytes")),
        "compressed_ratio": ratio(r.get("compressed_bytes"), m.get("compressed_bytes")),
        "mac_ratio": ratio(r.get("macs"), m.get("macs")),
    }
    if parent is not None:
        p = parent["metrics"]
        out["speedup_b64_vs_parent"] = ratio(lat(p, "b64"), lat(m, "b64"))
        out["mac_ratio_vs_parent"] = ratio(p.get("macs"), m.get("macs"))
    return out


def warnings_for(stage: dict, parent: dict | None) -> list[str]:
    """Plain statements about claims a user might otherwise assume (e.g. 'pruned but not faster')."""
    if parent is None:
        return []
    m, p = stage["metrics"], parent["metrics"]
    warns = []
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

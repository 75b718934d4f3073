"""Print the BENCHMARKS.md tables from run directories (results.json), so no figure is typed by hand.

    .venv/bin/python benchmarks/summarize.py runs/fm-baseline runs/fashion-mnist-prune ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _lat(m: dict, b: str) -> float | None:
    return ((m.get("latency_ms") or {}).get(b) or {}).get("median")


def _fmt(v: float | None, f: str) -> str:
    return "–" if v is None else f.format(v)


def summarize(run_dir: Path) -> str:
    res = json.loads((run_dir / "results.json").read_text())
    env = res["env"]
    stages = res["stages"]
    by_name = {s["name"]: s for s in stages}
    out = [
        f"### {res['recipe']} (`{run_dir}`)",
        "",
        f"Machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('threads')} threads, torch {env.get('torch')},"
        f" {env.get('date')}.",
        "",
        "| stage | parent | accuracy | Δ vs parent (pts) | params | MACs | MAC ratio vs parent | size | compressed"
        " | b1 ms | b64 ms | b64 speedup vs parent | runtime | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in stages:
        m = st["metrics"]
        p = by_name.get(st.get("parent") or "", {}).get("metrics")
        d_acc = None if p is None else 100 * (m["accuracy"] - p["accuracy"])
        mac_ratio = None if p is None or not m.get("macs") else p["macs"] / m["macs"]
        speed = None if p is None or not _lat(m, "b64") else _lat(p, "b64") / _lat(m, "b64")
        train_s = None
        hist = (m.get("training") or {}).get("history")
        if hist:
            train_s = sum(h.get("seconds", 0) for h in hist)
        out.append(
            f"| {st['name']} | {st.get('parent') or '–'} | {100 * m['accuracy']:.2f}% | {_fmt(d_acc, '{:+.2f}')} "
            f"| {m.get('params')} | {_fmt(m.get('macs'), '{:.3g}')} | {_fmt(mac_ratio, '{:.2f}×')} "
            f"| {m.get('size_bytes')} | {m.get('compressed_bytes')} | {_fmt(_lat(m, 'b1'), '{:.3f}')} "
            f"| {_fmt(_lat(m, 'b64'), '{:.3f}')} | {_fmt(speed, '{:.2f}×')} | {m.get('runtime')} "
            f"| {_fmt(train_s, '{:.0f}')} |"
        )
    refs = [(s["name"], s["metrics"]) for s in stages if s["metrics"].get("reference_latency_ms")]
    if refs:
        out += ["", "| quantized stage | fp32 reference runtime | ref b64 ms | stage b64 ms | speedup b64 |",
                "|---|---|---|---|---|"]
        for name, m in refs:
            for rt, lat in m["reference_latency_ms"].items():
                ref = (lat.get("b64") or {}).get("median")
                out.append(f"| {name} | {rt} | {_fmt(ref, '{:.3f}')} | {_fmt(_lat(m, 'b64'), '{:.3f}')} "
                           f"| {_fmt(ref / _lat(m, 'b64') if ref and _lat(m, 'b64') else None, '{:.2f}×')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for d in sys.argv[1:]:
        print(summarize(Path(d)))

"""The transformer acceptance table (issue 14) from a run of recipes/minilm-fortunes.yaml, with every
figure read from results.json, each stage against the teacher's fp32 eager and against the best fp32
runtime timed on the teacher in the same run, plus the pass/fail of each acceptance line.

    .venv/bin/python benchmarks/summarize_hf.py runs/minilm-fortunes [--batch b32]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# stage -> [(what, metric getter, threshold, comparison)]
CHECKS = {
    "int8": [("size ×", "size_x", 3.5), ("× fp32 eager", "eager_x", 2.0), ("× best fp32", "best_x", 1.3),
             ("cosine", "cosine", 0.99), ("recall@10", "recall_at_10", 0.9)],
    "student": [("× teacher", "eager_x", 1.8), ("cosine", "cosine", 0.95)],
    "pruned": [("cosine", "cosine", 0.97), ("× teacher", "eager_x", 1.0)],
}


def _lat(m: dict, b: str) -> float | None:
    return ((m.get("latency_ms") or {}).get(b) or {}).get("median")


def _fmt(v: float | None, f: str) -> str:
    return "–" if v is None else f.format(v)


def rows(res: dict, batch: str) -> tuple[list[str], list[str]]:
    stages = res["stages"]
    teacher = stages[0]["metrics"]
    refs = teacher.get("reference_latency_ms") or {}
    notes = teacher.get("reference_notes") or {}
    usable = {k: _lat(v, batch) for k, v in refs.items() if k not in notes or k == "fp32-eager"}
    best = min((k for k, v in usable.items() if v), key=lambda k: usable[k], default="fp32-eager")
    eager, best_ms = _lat(teacher, batch), usable.get(best) or _lat(teacher, batch)
    table = [
        f"| stage | parent | runtime | cosine | recall@10 | size MB | × smaller | {batch} ms | × fp32 eager | "
        f"× best fp32 ({best}) | b1 ms | embeddings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for st in stages:
        m = st["metrics"]
        ms = _lat(m, batch)
        fig = {"cosine": m.get("cosine"), "recall_at_10": m.get("recall_at_10"),
               "size_x": teacher["size_bytes"] / m["size_bytes"] if m.get("size_bytes") else None,
               "eager_x": eager / ms if eager and ms else None, "best_x": best_ms / ms if best_ms and ms else None}
        table.append(
            f"| {st['name']} | {st.get('parent') or '–'} | {m.get('runtime')} | {_fmt(fig['cosine'], '{:.4f}')} | "
            f"{_fmt(fig['recall_at_10'], '{:.3f}')} | {_fmt((m.get('size_bytes') or 0) / 1e6, '{:.1f}')} | "
            f"{_fmt(fig['size_x'], '{:.2f}×')} | {_fmt(ms, '{:.1f}')} | {_fmt(fig['eager_x'], '{:.2f}×')} | "
            f"{_fmt(fig['best_x'], '{:.2f}×')} | {_fmt(_lat(m, 'b1'), '{:.2f}')} | {m.get('embeddings') or '–'} |")
        for what, key, floor in CHECKS.get(st["name"], []):
            v = fig[key]
            ok = v is not None and v >= floor
            verdicts.append(f"- {st['name']}: {what} {_fmt(v, '{:.3f}')} (needs ≥ {floor}): {'met' if ok else 'NOT met'}")
    return table, verdicts


def main(argv: list[str]) -> int:
    batch = "b32"
    if "--batch" in argv:
        i = argv.index("--batch")
        batch, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    for run in argv or ["runs/minilm-fortunes"]:
        res = json.loads((Path(run) / "results.json").read_text())
        env = res["env"]
        table, verdicts = rows(res, batch)
        print(f"### {res['recipe']} (`{run}`)\n")
        print(f"Machine: {env.get('cpu')}, {env.get('threads')} threads, torch {env.get('torch')}, {env.get('date')}; "
              f"data: {res.get('data', {}).get('name')} ({res.get('data', {}).get('test')} test texts)\n")
        print("\n".join(table) + "\n")
        print("\n".join(verdicts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

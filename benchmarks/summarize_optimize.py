"""Print the BENCHMARKS.md tables of `frugal optimize` searches (front.json, the best.yaml reproduction run
`<search>-best`, and the hand-written runs the search was compared with), so no figure is typed by hand.

    .venv/bin/python benchmarks/summarize_optimize.py runs/fm-optimize-latency-b64 runs/fm-optimize-size
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COST = {"size": lambda m: m.get("size_bytes"), "size-zstd": lambda m: m.get("compressed_bytes"),
        "macs": lambda m: m.get("macs"), "params": lambda m: m.get("nonzero_params"),
        "energy": lambda m: (m.get("energy_mj_per_sample") or {}).get("value")}


def cost(objective: str, metrics: dict) -> float | None:
    if objective.startswith("latency-b"):
        return ((metrics.get("latency_ms") or {}).get(objective.removeprefix("latency-")) or {}).get("median")
    return COST[objective](metrics)


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def handwritten_best(runs: list[str], objective: str, max_drop: float) -> tuple[str, float, float] | None:
    best = None
    for run in runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            continue
        stages = json.loads(path.read_text())["stages"]
        q0 = stages[0]["metrics"].get("accuracy")
        for st in stages[1:]:
            q, c = st["metrics"].get("accuracy"), cost(objective, st["metrics"])
            if q is None or q0 is None or c is None or 100 * (q0 - q) > max_drop:
                continue
            if best is None or c < best[1]:
                best = (f"{Path(run).name}/{st['name']}", c, 100 * (q0 - q))
    return best


def summarize(search: Path) -> str:
    front = json.loads((search / "front.json").read_text())
    objective, max_drop = front["objectives"][0], front["max_drop"]
    rows = {t["number"]: t for t in front["trials"]}
    out = [f"### `frugal optimize`, objective {objective}, max drop {max_drop} (`{search}`)", ""]
    counts = ", ".join(f"{v} {k}" for k, v in front["counts"].items())
    out.append(f"Search: {counts}; {front.get('seconds', '?')} s wall; stopped: {front.get('stopped', '?')}.")
    if front["best"] is None:
        near = "; ".join(f"trial {n}: {rows[n]['pipeline']} (val drop {rows[n]['drop']:.2f})" for n in front["closest"])
        return "\n".join([*out, "", f"No trial within max drop; closest: {near}", ""])
    best = rows[front["best"]]
    test = front.get("final", {}).get("trials", {}).get(str(best["number"]), {})
    out += ["", f"Chosen: trial {best['number']}: `{best['pipeline']}`", ""]
    out += ["| | val drop (pts) | test drop (pts) | test accuracy | " + objective + " | b64 ms | size B |",
            "|---|---|---|---|---|---|---|"]
    trial = json.loads((search / best["run_dir"] / "results.json").read_text())["stages"][-1]["metrics"]
    out.append(f"| search trial (val) | {best['drop']:+.2f} | {_f(test.get('drop'), '{:+.2f}')} | "
               f"{_f(test.get('quality') and 100 * test['quality'], '{:.2f}%')} | {_f(best['costs'][objective], '{:.6g}')} | "
               f"{_f(cost('latency-b64', trial))} | {trial.get('size_bytes')} |")
    again_path = Path(f"{search}-best") / "results.json"
    if again_path.is_file():
        stages = json.loads(again_path.read_text())["stages"]
        base, last = stages[0]["metrics"], stages[-1]["metrics"]
        drop = 100 * (base["accuracy"] - last["accuracy"])
        out.append(f"| `frugal run best.yaml` (test) | – | {drop:+.2f} | {100 * last['accuracy']:.2f}% | "
                   f"{_f(cost(objective, last), '{:.6g}')} | {_f(cost('latency-b64', last))} | {last.get('size_bytes')} |")
    hand = handwritten_best(front.get("compare") or [], objective, max_drop)
    out.append("")
    if hand:
        name, c, drop = hand
        ratio = c / best["costs"][objective] if best["costs"][objective] else float("nan")
        out.append(f"Best hand-written stage within {max_drop} point (test): `{name}`, {objective} {c:.6g} "
                   f"(drop {drop:+.2f}) -> the search's pipeline is **{ratio:.2f}x** lower in {objective}.")
    else:
        out.append("No hand-written run to compare with (front.json `compare` lists none that exist).")
    timed = front.get("retimed")
    if timed:
        out += ["", f"Re-timed back to back when the search ended ({timed['objective']}, ms; {timed['rounds']} rounds "
                f"in alternation, {timed['threads']} threads; drop: val for trials, test for hand-written stages; "
                f"chosen on these medians" + ("" if timed["search_best"] == timed["best"] else
                                              f", not trial {timed['search_best']} the search's timings ranked first")
                + "):", "", "| pipeline | kind | drop | during the search | rounds | median |", "|---|---|---|---|---|---|"]
        for e in timed["entries"]:
            name = e["key"] + (f": `{rows[e['number']]['pipeline']}`" if e["number"] in rows else "")
            mark = " **(chosen)**" if e["number"] == front["best"] and e["kind"] == "trial" else ""
            out.append(f"| {name}{mark} | {e['kind']} | {_f(e['drop'], '{:+.2f}')} | {_f(e['search'])} | "
                       f"{' / '.join(f'{m:.3f}' for m in e['rounds'])} | {e['median']:.3f} |")
        mine = next(e for e in timed["entries"] if e["number"] == front["best"] and e["kind"] == "trial")
        hands = [e for e in timed["entries"] if e["kind"] == "hand-written"]
        if hands:
            fastest = min(hands, key=lambda e: e["median"])
            out += ["", f"Back to back: the chosen pipeline {mine['median']:.3f} ms; the fastest hand-written stage "
                    f"timed with it, `{fastest['key']}`, {fastest['median']:.3f} ms (**{fastest['median'] / mine['median']:.2f}x** "
                    "the chosen pipeline's time)."]
    return "\n".join([*out, ""])


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["runs/fm-optimize-latency-b64", "runs/fm-optimize-size"]:
        print(summarize(Path(arg)))

"""The search's report: every trial on the accuracy-vs-cost plane (front marked), the chosen pipeline,
the front, every trial, and how the chosen pipeline compares with hand-written recipes' stages.
Only divides and draws numbers that trials measured (frugalml.measure); nothing is estimated here."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from frugalml._io import atomic_write_bytes, atomic_write_text
from frugalml._plot import png_bytes
from frugalml.errors import FrugalError
from frugalml.optimize.config import Objective, SearchConfig
from frugalml.optimize.trial import Setup
from frugalml.report.compare import quality

LEAKAGE = ("The search measured and picked on the validation split only (each trial's run folder measures its "
           "stages on a view of the data whose test split is the val split); the test split was read once, at the "
           "end, to report the final front. No test data took part in any choice.")


def trial_plot(summary: dict, objective: Objective) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_q = 100 * (summary["base"]["quality"] or 0)
    fig, ax = plt.subplots(figsize=(6.6, 4.4), dpi=110)
    done = [r for r in summary["trials"] if r["state"] == "complete" and r["costs"].get(objective.name)]
    for feasible, color, label in ((True, "tab:blue", "trial within the limit"), (False, "0.6", "trial over the limit")):
        pts = [r for r in done if r["feasible"] == feasible]
        ax.scatter([r["costs"][objective.name] for r in pts], [base_q - r["drop"] for r in pts], s=22, c=color,
                   label=label, zorder=3)
    front = sorted((r for r in done if r["number"] in summary["front"]), key=lambda r: r["costs"][objective.name])
    if front:
        ax.plot([r["costs"][objective.name] for r in front], [base_q - r["drop"] for r in front], "o--",
                mfc="none", c="tab:red", ms=9, lw=1, label="Pareto front", zorder=4)
    best = next((r for r in done if r["number"] == summary["best"]), None)
    if best:
        ax.scatter([best["costs"][objective.name]], [base_q - best["drop"]], marker="*", s=220, c="gold",
                   edgecolors="k", label=f"chosen (trial {best['number']})", zorder=5)
    base_cost = summary["base"]["costs"].get(objective.name)
    if base_cost:
        ax.scatter([base_cost], [base_q], marker="D", c="k", s=40, label="base model", zorder=5)
    ax.axhline(base_q - summary["max_drop"], color="tab:red", lw=0.8, ls=":", label=f"max_drop {summary['max_drop']}")
    margin = summary.get("select_margin") or 0
    if margin:
        ax.axhline(base_q - summary["max_drop"] + margin, color="tab:orange", lw=0.8, ls=":",
                   label=f"choice limit (select_margin {margin:g})")
    ax.set_xlabel(f"{objective.name} ({objective.unit})")
    ax.set_ylabel("val accuracy (%)" if summary.get("quality_metric", "accuracy") == "accuracy" else "val quality (×100)")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def handwritten(run_dirs: list[str], objectives: list[Objective], max_drop: float) -> list[list[str]]:
    """Every stage of hand-written runs: its test drop against its run's first stage and its costs."""
    from frugalml.report import load_results

    rows = []
    for run_dir in run_dirs:
        try:
            stages = load_results(run_dir)["stages"]
        except FrugalError as e:
            rows.append([str(run_dir), f"not read: {e}", "", *[""] * len(objectives)])
            continue
        q0 = quality(stages[0]["metrics"]) if stages else None
        for st in stages:
            q = quality(st["metrics"])
            drop = None if q is None or q0 is None else 100 * (q0 - q)
            mark = "" if drop is None else ("within" if drop <= max_drop + 1e-9 else "over")
            rows.append([f"{Path(run_dir).name}/{st['name']}", _f(drop), mark,
                         *[o.fmt(o.value(st["metrics"])) for o in objectives]])
    return rows


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f}"


def sections(summary: dict, setup: Setup, cfg: SearchConfig) -> list[tuple[str, list[str], list]]:
    objs = setup.objectives
    final = summary.get("final") or {}
    tests = final.get("trials", {})
    rows = {r["number"]: r for r in summary["trials"]}
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items()) or "none yet"
    lines = [f"objectives: {', '.join(o.name for o in objs)} (minimised, with the val accuracy drop); max_drop "
             f"{setup.max_drop} points"
             + (f" (chosen within {setup.limit:g}: select_margin {setup.select_margin:g})" if setup.select_margin else "")
             + f"; sampler {cfg.sampler}; trials: {counts}",
             f"base model: {summary['base']['artifact']} (val quality {100 * (summary['base']['quality'] or 0):.2f}%; "
             + ", ".join(f"{o.name} {o.fmt(summary['base']['costs'].get(o.name))}" for o in objs) + ")", LEAKAGE]
    secs: list = [("search", [], lines)]
    best = rows.get(summary["best"]) if summary["best"] is not None else None
    if best:
        base_costs = summary["base"]["costs"]
        t = tests.get(str(best["number"]))
        chosen = [f"trial {best['number']}: {best['pipeline']}",
                  f"val accuracy drop {best['drop']:.2f} points"
                  + (f"; test drop {t['drop']:.2f} points (final, reported only)" if t and t["drop"] is not None else ""),
                  *[f"{o.name}: {o.fmt(best['costs'][o.name])} vs base {o.fmt(base_costs.get(o.name))}"
                    + (f" ({base_costs[o.name] / best['costs'][o.name]:.2f}× lower)"
                       if base_costs.get(o.name) and best["costs"][o.name] else "")
                    for o in objs],
                  "recipe: best.yaml (frugal run best.yaml reproduces it); run folder: " + str(best["run_dir"])]
        timed = summary.get("retimed")
        how = "cheapest in the first objective"
        if timed:
            from frugalml.optimize.retime import entry

            mine, base = entry(timed, "trial", best["number"]), entry(timed, "base")
            assert mine is not None  # the choice is always one of the re-timed trials
            how = f"fastest when re-timed back to back ({timed['rounds']} rounds)"
            chosen.insert(-1, f"re-timed: {timed['objective']} {mine['median']:.3f} ms"
                          + (f" vs base {base['median']:.3f} ms ({base['median'] / mine['median']:.2f}× lower)"
                             if base else "") + " (the costs above are the search's own timings)")
            if timed["search_best"] != best["number"]:
                chosen.insert(-1, f"re-timing changed the choice: trial {timed['search_best']} was the cheapest on "
                              "the search's own timings")
        secs.append((f"chosen pipeline ({how}, val drop ≤ {setup.limit:g})", [], chosen))
    elif summary["closest"]:
        secs.append((f"no trial stayed within {setup.limit:g} points: the closest ones (kept; closest.yaml reproduces the first)", [],
                     [f"trial {n}: val drop {rows[n]['drop']:.2f} points ({rows[n]['state']}): {rows[n]['pipeline']}"
                      for n in summary["closest"]]))
    timed = summary.get("retimed")
    if timed:
        secs.append((f"re-timed back to back: {timed['objective']} (ms), {timed['rounds']} rounds in alternation, "
                     f"{timed['threads']} threads; the choice is the trial with the lowest median (drop: val for "
                     "trials, test for hand-written stages)",
                     ["pipeline", "kind", "drop", "during the search", "rounds", "median", ""],
                     [[e["key"] + (f": {rows[e['number']]['pipeline']}" if e["number"] in rows else ""), e["kind"],
                       _f(e["drop"]), "–" if e["search"] is None else f"{e['search']:.3f}", " / ".join(f"{m:.3f}" for m in e["rounds"]),
                       f"{e['median']:.3f}", "chosen" if e["number"] == summary["best"] and e["kind"] == "trial"
                       else ""] for e in timed["entries"]]))
    cols = ["trial", "pipeline", "val drop", *[o.name for o in objs], "test drop"]
    front = [[str(n), rows[n]["pipeline"], _f(rows[n]["drop"]), *[o.fmt(rows[n]["costs"].get(o.name)) for o in objs],
              _f((tests.get(str(n)) or {}).get("drop"))] for n in summary["front"]]
    secs.append(("Pareto front (val drop vs costs; test drop measured once at the end)", cols, front))
    if cfg.compare and best:
        t = tests.get(str(best["number"]))
        ours = [f"chosen (trial {best['number']})", _f(t["drop"] if t else best["drop"]),
                "test" if t else "val (test not read yet)", *[o.fmt(best["costs"][o.name]) for o in objs]]
        secs.append((f"compared with hand-written recipes (test drop vs each run's first stage; max_drop "
                     f"{setup.max_drop})", ["stage", "drop", "", *[o.name for o in objs]],
                     [ours, *handwritten(cfg.compare, objs, setup.max_drop)]))
    cols = ["trial", "state", "pipeline", "val drop", *[o.name for o in objs], "seconds", "note"]
    every = [[str(r["number"]), r["state"], r["pipeline"], _f(r["drop"]), *[o.fmt(r["costs"].get(o.name)) for o in objs],
              "–" if r["seconds"] is None else f"{r['seconds']:.0f}", _note(r)] for r in summary["trials"]]
    secs.append(("every trial", cols, every))
    return secs


def _note(r: dict) -> str:
    if "duplicate_of" in r:
        return f"same pipeline as trial {r['duplicate_of']}"
    if "stopped_after" in r:
        return f"stopped after {r['stopped_after']}: hopeless"
    if "error" in r:
        return str(r["error"])[:160]
    return f"retry of trial {r['retry_of']}" if "retry_of" in r else ""


def _md(cols: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *("| " + " | ".join(r) + " |" for r in esc)])


def write_report(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> None:
    pngs = {f"trials-{o.name}": trial_plot(summary, o) for o in setup.objectives}
    secs = sections(summary, setup, cfg)
    title = f"frugal optimize: {setup.recipe.name}"
    md = [f"# {title}", ""]
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;"
            "font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f3f3f3}img{max-width:640px}"
            f"</style></head><body><h1>{html.escape(title)}</h1>"]
    for name, png in pngs.items():
        atomic_write_bytes(root / f"{name}.png", png)
        md.append(f"![{name}]({name}.png)")
        page.append(f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    md.append("")
    for sec, cols, rows in secs:
        md += [f"## {sec}", "", _md(cols, rows) if cols else "\n".join(f"- {x}" for x in rows), ""]
        page.append(f"<h2>{html.escape(sec)}</h2>")
        if cols:
            page.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
                        + "</table>")
        else:
            page.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rows) + "</ul>")
    atomic_write_text(root / "report.md", "\n".join(md))
    atomic_write_text(root / "report.html", "\n".join(page) + "</body></html>")


def closest_message(summary: dict) -> str:
    rows: dict[int, Any] = {r["number"]: r for r in summary["trials"]}
    near = "; ".join(f"trial {n} ({rows[n]['pipeline']}) val drop {rows[n]['drop']:.2f}" for n in summary["closest"])
    return near or "no trial finished"

"""What a search leaves on disk after every trial (atomically): `front.json` (every trial, the Pareto
front, the best pipeline), `best.yaml` (a recipe `frugal run` reproduces it with), and the report.
When no trial meets max_drop, the closest trials are named instead and `closest.yaml` holds the first.

`front.json` (schema 1): {schema, recipe, objectives, max_drop, select_margin, split: "val", base: {quality, costs},
trials: [{number, state, pipeline, drop, costs, feasible, run_dir, seconds, ...}], front: [numbers],
best: number | null, closest: [numbers], retimed?: {objective, rounds, threads, entries: [{key, kind, number,
drop, search, rounds, median}], best, search_best}, final?: {split: "test", base, trials: {number: {quality,
drop}}}}. With `retimed`, `best` is its choice (made on the re-timings; `search_best` on the search's own).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from frugalml._io import atomic_write_json, atomic_write_text
from frugalml.optimize.config import SearchConfig
from frugalml.optimize.study import describe
from frugalml.optimize.trial import BASE_STAGE, Setup
from frugalml.recipe import dump_recipe, recipe_from_mapping
from frugalml.report.compare import quality

log = logging.getLogger("frugalml")
SCHEMA = 1
_STATES = {"COMPLETE": "complete", "PRUNED": "stopped early", "FAIL": "failed", "RUNNING": "running",
           "WAITING": "waiting"}


def _row(t: Any, setup: Setup) -> dict:
    a = t.user_attrs
    out = a.get("outcome") or {}
    state = _STATES.get(t.state.name, t.state.name.lower())
    if "duplicate_of" in a:
        state = "duplicate"
    elif t.state.name == "FAIL" and "error" not in a:
        state = "interrupted"
    chain = a.get("chain") or []
    costs = {}
    if out.get("values"):
        costs = {o.name: v for o, v in zip(setup.objectives, out["values"][1:])}
    drop = out.get("drop")
    return {
        "number": t.number, "state": state, "pipeline": " -> ".join(describe(s) for s in chain) or "base model",
        "chain": chain, "params": t.params, "drop": drop, "costs": costs,
        "feasible": drop is not None and state == "complete" and drop <= setup.limit + 1e-9,
        "run_dir": out.get("run_dir"), "seconds": out.get("seconds"), "stages": out.get("stages", []),
        "pins": out.get("pins", {}), **{k: a[k] for k in ("duplicate_of", "retry_of", "worker", "error") if k in a},
        **({"stopped_after": out["pruned_after"]} if "pruned_after" in out else {}),
    }


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def summarize(study: Any, setup: Setup, cfg: SearchConfig) -> dict:
    rows = [_row(t, setup) for t in study.get_trials(deepcopy=False)
            if "surplus" not in t.user_attrs and t.state.name != "WAITING"]
    done = [r for r in rows if r["state"] == "complete"]
    points = {r["number"]: [r["drop"], *r["costs"].values()] for r in done}
    front = [n for n, p in points.items() if not any(_dominates(q, p) for m, q in points.items() if m != n)]
    primary = setup.objectives[0].name
    feasible = [r for r in done if r["feasible"]]
    best = min(feasible, key=lambda r: (r["costs"][primary], r["drop"], r["number"])) if feasible else None
    tried = [r for r in rows if r["state"] in ("complete", "stopped early") and r["drop"] is not None]
    closest = [] if best else [r["number"] for r in sorted(tried, key=lambda r: (r["drop"], r["number"]))[:3]]
    return {
        "schema": SCHEMA, "recipe": setup.recipe.name, "objectives": [o.name for o in setup.objectives],
        "max_drop": setup.max_drop, "select_margin": setup.select_margin, "split": "val", "sampler": cfg.sampler,
        "quality_metric": setup.base_metrics.get("quality_metric") or "accuracy",
        "base": {"artifact": str(setup.base_artifact), "quality": quality(setup.base_metrics),
                 "costs": {o.name: o.value(setup.base_metrics) for o in setup.objectives}},
        "compare": list(cfg.compare), "trials": rows, "front": sorted(front),
        "best": best["number"] if best else None, "closest": closest,
        "counts": {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})},
    }


def recipe_text(setup: Setup, row: dict, what: str, retimed: dict | None = None) -> str:
    """A recipe reproducing trial `row` with `frugal run`: the base loaded, its chain, the choices that
    `backend: auto` and the runtime stage measured written down."""
    chain = copy.deepcopy(row["chain"])
    for stage in chain:
        stage.update(row["pins"].get(stage["name"], {}))
    raw = setup.recipe.model_dump(mode="json")
    raw["name"] = f"{setup.recipe.name[:56]}-{what}"
    raw["stages"] = [{"kind": "load", "name": BASE_STAGE, "path": str(setup.base_artifact)}, *chain]
    recipe = recipe_from_mapping(raw, f"{what}.yaml")
    costs = ", ".join(f"{o.name} {o.fmt(row['costs'].get(o.name))}" for o in setup.objectives)
    header = [f"# {what} pipeline of frugal optimize: trial {row['number']} ({row['run_dir']})",
              f"#   val accuracy drop {row['drop']:.2f} points (max_drop {setup.max_drop}"
              f"{f', select_margin {setup.select_margin}' if setup.select_margin else ''}); {costs}",
              f"#   pipeline: {row['pipeline']}",
              *_retimed_line(row, retimed),
              "# Reproduce (measured on the test split):  frugal run THIS_FILE --out runs/<name>",
              "# Choices measured during the search (backend: auto, runtime candidates) are written down."]
    return "\n".join(header) + "\n" + dump_recipe(recipe)


def _retimed_line(row: dict, retimed: dict | None) -> list[str]:
    from frugalml.optimize.retime import entry

    mine, base = entry(retimed, "trial", row["number"]), entry(retimed, "base")
    if mine is None or retimed is None:
        return []
    return [f"#   re-timed in {retimed['rounds']} rounds alternating with {len(retimed['entries']) - 1} others: "
            f"{retimed['objective']} {mine['median']:.3f} ms" + (f" (base {base['median']:.3f} ms)" if base else "")]


def write_outputs(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> None:
    from frugalml.optimize.report import write_report

    atomic_write_json(root / "front.json", summary)
    rows = {r["number"]: r for r in summary["trials"]}
    if summary["best"] is not None:
        atomic_write_text(root / "best.yaml", recipe_text(setup, rows[summary["best"]], "best", summary.get("retimed")))
    elif summary["closest"]:
        atomic_write_text(root / "closest.yaml", recipe_text(setup, rows[summary["closest"][0]], "closest"))
    write_report(root, summary, setup, cfg)


def final_test(root: Path, summary: dict, setup: Setup) -> dict:
    """The test split, read for the first time: the base and the front's pipelines, measured as
    `frugal run` would (their artifacts from the trials' run folders). Reported, never used to pick."""
    from frugalml import artifact
    from frugalml.data import load_data
    from frugalml.measure import MeasureConfig
    from frugalml.measure.task import bind_reference
    from frugalml.pipeline import measure_stage

    data = load_data(setup.recipe.data)
    cheap = MeasureConfig(threads=setup.recipe.measure.threads, batch_sizes=[1], warmup_iters=0, warmup_seconds=0,
                          iters=1, min_seconds=0, roofline=False, references=[])

    def test_quality(directory: Path) -> float | None:
        model = artifact.load(directory, trust_code=setup.trust_code or setup.recipe.user_factories())
        bind_reference(data, model, "the base model")  # reference tasks: the base's outputs (first call only)
        return quality(measure_stage(model, data, cheap, directory))

    base_q = test_quality(setup.base_artifact)
    rows = {r["number"]: r for r in summary["trials"]}
    numbers = sorted(set(summary["front"]) | {n for n in [summary["best"], *summary["closest"]] if n is not None})
    out: dict[str, Any] = {"split": "test", "base": base_q, "trials": {}}
    for n in numbers:
        row = rows[n]
        last = row["stages"][-1]["name"] if row["stages"] else None
        directory = root / row["run_dir"] / "stages" / str(last)
        if last is None or not (directory / "model.json").is_file():
            continue
        q = test_quality(directory)
        drop = None if q is None or base_q is None else round(100.0 * (base_q - q), 4)
        out["trials"][str(n)] = {"quality": q, "drop": drop}
    log.info("final front on the test split: %s", out["trials"])
    return out

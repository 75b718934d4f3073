"""Re-timing before the choice, for latency objectives.

Each trial's latency was measured when the trial ran, minutes or an hour apart from the others; on a
shared 2-core VM the same model's batch-64 median moved by up to 50% between such measurements
(BENCHMARKS.md), as much as the differences being ranked. So when the search ends, the cheapest
`retime_top` pipelines within the limit, the base model and the fastest hand-written stages of
`compare` runs are loaded from their artifacts and timed again in alternation: `retime_rounds`
rounds, each timing every one of them once (the order rotated each round), with the recipe's
measurement settings. The choice is the trial with the lowest median of its round medians; the
hand-written stages are timed only to be compared with it, under the same conditions.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalml.errors import FrugalError
from frugalml.optimize.config import Objective, SearchConfig
from frugalml.optimize.trial import Setup
from frugalml.report.compare import quality

log = logging.getLogger("frugalml")
HANDWRITTEN = 2  # hand-written stages timed with the candidates


@dataclass
class Entry:
    key: str  # "trial 15", "base", "fm-prune/int8"
    kind: str  # trial | base | hand-written
    directory: Path
    search_value: float | None  # the objective as measured before (in the search or the hand-written run)
    number: int | None = None
    drop: float | None = None  # trials: val drop; hand-written: test drop against its run's first stage


def _stage_dir(root: Path, row: dict) -> Path | None:
    last = row["stages"][-1]["name"] if row.get("stages") else None
    directory = root / row["run_dir"] / "stages" / str(last) if last and row.get("run_dir") else None
    return directory if directory is not None and (directory / "model.json").is_file() else None


def handwritten_entries(run_dirs: list[str], objective: Objective, max_drop: float, n: int) -> list[Entry]:
    """The `n` stages of hand-written runs fastest in `objective` (as they measured it) within max_drop
    of their run's first stage (test split)."""
    from frugalml.report import load_results

    found = []
    for run_dir in run_dirs:
        try:
            stages = load_results(run_dir)["stages"]
        except FrugalError:
            continue  # the report names unreadable runs
        q0 = quality(stages[0]["metrics"]) if stages else None
        for st in stages:
            q, value = quality(st["metrics"]), objective.value(st["metrics"])
            directory = Path(run_dir) / "stages" / st["name"]
            if q is None or q0 is None or value is None or not (directory / "model.json").is_file():
                continue
            drop = 100 * (q0 - q)
            if drop <= max_drop + 1e-9:
                found.append(Entry(f"{Path(run_dir).name}/{st['name']}", "hand-written", directory, value, drop=drop))
    return sorted(found, key=lambda e: e.search_value)[:n]


def entries(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> list[Entry]:
    objective = setup.objectives[0]
    done = sorted((r for r in summary["trials"] if r["feasible"] and r["costs"].get(objective.name) is not None),
                  key=lambda r: (r["costs"][objective.name], r["drop"], r["number"]))
    out = []
    for row in done:
        directory = _stage_dir(root, row)
        if directory is not None and len(out) < cfg.retime_top:
            out.append(Entry(f"trial {row['number']}", "trial", directory, row["costs"][objective.name],
                             number=row["number"], drop=row["drop"]))
    if out:
        out.append(Entry("base", "base", setup.base_artifact, summary["base"]["costs"].get(objective.name), drop=0.0))
        out += handwritten_entries(list(cfg.compare), objective, setup.max_drop, HANDWRITTEN)
    return out


def _runner(model: Any) -> Any:
    from frugalml.measure.core import _model_runner

    return model if getattr(model, "frugal_runtime", None) is not None else _model_runner(model)


def retime(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> dict | None:
    """Time the candidates again in alternation (see the module doc). Returns front.json's `retimed`
    (with `best`, the trial chosen on these timings), or None when there is nothing to re-time."""
    from frugalml import artifact
    from frugalml.measure.latency import measure_latency

    objective = setup.objectives[0]
    if objective.batch is None or cfg.retime_rounds == 0:
        return None
    todo = entries(root, summary, setup, cfg)
    if sum(e.kind == "trial" for e in todo) < 1:
        return None
    runners: dict[str, Any] = {}
    for e in todo:
        try:
            runners[e.key] = _runner(artifact.load(e.directory, trust_code=setup.trust_code
                                                   or setup.recipe.user_factories()))
        except FrugalError as err:  # a hand-written run moved or broken: compare without it
            log.info("re-timing: %s not loaded (%s)", e.key, err)
    todo = [e for e in todo if e.key in runners]
    x = setup.view.sample_input(objective.batch)
    medians: dict[str, list[float]] = {e.key: [] for e in todo}
    threads = None
    for r in range(cfg.retime_rounds):
        shift = r % len(todo)
        for e in todo[shift:] + todo[:shift]:
            t = measure_latency(runners[e.key], x, setup.recipe.measure)
            medians[e.key].append(round(t["median"], 6))
            threads = t["threads"]
    rows = [{"key": e.key, "kind": e.kind, "number": e.number, "directory": str(e.directory), "drop": e.drop,
             "search": e.search_value, "rounds": medians[e.key], "median": statistics.median(medians[e.key])}
            for e in todo]
    trials = [r for r in rows if r["kind"] == "trial"]
    best = min(trials, key=lambda r: (r["median"], r["drop"], r["number"]))
    log.info("re-timed %d pipelines in %d alternating rounds: %s", len(rows), cfg.retime_rounds,
             ", ".join(f"{r['key']} {r['median']:.3f} ms" for r in rows))
    return {"objective": objective.name, "rounds": cfg.retime_rounds, "threads": threads, "entries": rows,
            "best": best["number"], "search_best": summary["best"]}

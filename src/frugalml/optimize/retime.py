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


def handwritten_entries(run_dirs: list[str], objective: Objective, max_drop: float) -> list[Entry]:
    """Stages of hand-written runs within max_drop of their run's first stage (test split), fastest in
    `objective` (as they measured it) first; the first stage itself is what they compress, not a
    hand-written result. A run named twice counts once."""
    from frugalml.report import load_results

    found = []
    for run_dir in dict.fromkeys(run_dirs):
        try:
            stages = load_results(run_dir)["stages"]
        except FrugalError:
            continue  # the report names unreadable runs
        q0 = quality(stages[0]["metrics"]) if stages else None
        for st in stages[1:]:
            q, value = quality(st["metrics"]), objective.value(st["metrics"])
            directory = Path(run_dir) / "stages" / st["name"]
            if q is None or q0 is None or value is None or not (directory / "model.json").is_file():
                continue
            drop = 100 * (q0 - q)
            if drop <= max_drop + 1e-9:
                found.append(Entry(f"{run_dir}/{st['name']}", "hand-written", directory, value, drop=drop))
    return sorted(found, key=lambda e: e.search_value)


def candidates(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> tuple[list[Entry], Entry, list[Entry]]:
    """(trials within the limit, cheapest first; the base; hand-written stages, fastest first)."""
    objective = setup.objectives[0]
    done = sorted((r for r in summary["trials"] if r["feasible"] and r["costs"].get(objective.name) is not None),
                  key=lambda r: (r["costs"][objective.name], r["drop"], r["number"]))
    trials = [Entry(f"trial {r['number']}", "trial", d, r["costs"][objective.name], number=r["number"], drop=r["drop"])
              for r in done if (d := _stage_dir(root, r)) is not None]
    base = Entry("base", "base", setup.base_artifact, summary["base"]["costs"].get(objective.name), drop=0.0)
    return trials, base, handwritten_entries(list(cfg.compare), objective, setup.max_drop)


def entry(retimed: dict | None, kind: str, number: int | None = None) -> dict | None:
    """The row of `retimed` (front.json's) for a trial (`kind` "trial" and its number) or the base."""
    return next((e for e in (retimed or {}).get("entries", []) if e["kind"] == kind and e["number"] == number), None)


def _runner(e: Entry, setup: Setup, x: Any) -> Any:
    """The entry's model as a callable, run once on `x`; FrugalError (or the model's own error, in one
    line) when it cannot be loaded or cannot take the search's input."""
    from frugalml import artifact
    from frugalml.measure.core import _model_runner

    spec = artifact.read_info(e.directory).get("spec")
    if isinstance(spec, dict) and "input_shape" in spec and "num_classes" in spec:
        setup.view.check_fits(spec, e.key)
    model = artifact.load(e.directory, trust_code=setup.trust_code or setup.recipe.user_factories())
    run = model if getattr(model, "frugal_runtime", None) is not None else _model_runner(model)
    try:
        import torch

        with torch.inference_mode():
            run(x)
    except Exception as err:  # another model's stage: its own kernels say why, in any exception type
        raise FrugalError(f"does not run on the search's input ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160] if str(err) else ''})") from None
    return run


def retime(root: Path, summary: dict, setup: Setup, cfg: SearchConfig) -> dict | None:
    """Time the candidates again in alternation (see the module doc). Returns front.json's `retimed`
    (with `best`, the trial chosen on these timings), or None when there is nothing to re-time."""
    from frugalml.measure.latency import measure_latency

    objective = setup.objectives[0]
    if objective.batch is None or cfg.retime_rounds == 0:
        return None
    x = setup.view.sample_input(objective.batch)
    runners: dict[str, Any] = {}
    todo: list[Entry] = []

    def take(pool: list[Entry], n: int) -> None:
        """The first `n` of `pool` that load and run; the others are left out with one line each."""
        for e in pool:
            if sum(t.kind == e.kind for t in todo) >= n:
                return
            try:
                runners[e.key] = _runner(e, setup, x)
                todo.append(e)
            except FrugalError as err:  # moved, broken or made for other data: time the next one
                log.warning("re-timing: %s left out: %s", e.key, err)

    trials, base, hands = candidates(root, summary, setup, cfg)
    take(trials, cfg.retime_top)
    if not todo:
        return None  # the choice stays on the search's own timings
    take([base], 1)
    take(hands, HANDWRITTEN)
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

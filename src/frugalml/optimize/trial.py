"""One trial: the base model loaded, the sampled stage chain applied, through `run_recipe` into its own
run folder (same measurement, same report as `frugal run`).

No test leakage: every trial (and the base) is run on a view of the data whose test split *is* the
val split, so each stage's "accuracy" in a trial's results.json is val accuracy and the real test
split never reaches the search. It is read once at the end, to report the final front.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml.data import DataBundle
from frugalml.errors import ConfigError, FrugalError
from frugalml.optimize import cache
from frugalml.optimize.config import Objective
from frugalml.pipeline import run_recipe
from frugalml.recipe import Recipe, recipe_from_mapping
from frugalml.report.compare import quality

log = logging.getLogger("frugalml")
BASE_STAGE = "base"


def selection_view(data: DataBundle) -> DataBundle:
    """`data` with its test split replaced by its val split: what a search measures and picks on."""
    if len(data.y_val) == 0:
        raise ConfigError("data.val_fraction: a search picks on the validation split, and this data has none; "
                          "set data.val_fraction above 0 (e.g. 0.1)")
    texts = dict(data.texts, test=data.texts.get("val", [])) if data.texts else data.texts
    return dataclasses.replace(data, name=f"{data.name}[val]", x_test=data.x_val, y_test=data.y_val, texts=texts)


@dataclass
class Setup:
    """What every trial shares."""

    root: Path  # the search folder
    recipe: Recipe  # the user's recipe (its sections; stages replaced per trial)
    base_artifact: Path  # the base model's artifact folder
    base_metrics: dict  # its metrics on val
    view: DataBundle  # selection_view of the recipe's data
    objectives: list[Objective]
    max_drop: float
    prune_margin: float
    select_margin: float = 0.0
    trust_code: bool = False
    space: dict = field(default_factory=dict)

    @property
    def base_quality(self) -> float:
        q = quality(self.base_metrics)
        if q is None:
            raise ConfigError("the base model has no quality measured (measure.accuracy: false?); a search needs it")
        return float(q)

    @property
    def limit(self) -> float:
        """The largest val drop a chosen pipeline may have: max_drop less the selection margin."""
        return self.max_drop - self.select_margin

    def drop(self, metrics: dict) -> float | None:
        q = quality(metrics)
        return None if q is None else round(100.0 * (self.base_quality - float(q)), 4)

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / f"{number:04d}"


class StopTrial(Exception):
    """Raised by the stage hook: this trial cannot end within max_drop (its later stages would not win
    the accuracy back), so the rest of its chain is not run."""

    def __init__(self, stage: str, drop: float) -> None:
        super().__init__(f"stopped after stage {stage}: val drop {drop:.2f} points")
        self.stage, self.drop = stage, drop


def trial_recipe(setup: Setup, chain: list[dict], name: str) -> Recipe:
    raw = setup.recipe.model_dump(mode="json")
    raw["name"] = name
    raw["stages"] = [{"kind": "load", "name": BASE_STAGE, "path": str(setup.base_artifact)}, *chain]
    return recipe_from_mapping(raw, f"trial {name}")


def stage_summary(name: str, kind: str, metrics: dict, setup: Setup) -> dict:
    return {"name": name, "kind": kind, "quality": quality(metrics), "drop": setup.drop(metrics),
            "runtime": metrics.get("runtime"), "costs": {o.name: o.value(metrics) for o in setup.objectives},
            "stage_seconds": metrics.get("stage_seconds")}


def pins(results: dict) -> dict[str, dict]:
    """What `backend: auto` and the runtime stage chose, by stage: best.yaml writes it down, so that
    `frugal run best.yaml` rebuilds the same pipeline instead of measuring the choice again."""
    out: dict[str, dict] = {}
    for st in results.get("stages", []):
        m = st.get("metrics") or {}
        chosen = next((c for c in m.get("candidates") or [] if c.get("chosen")), None)
        if st["kind"] == "quantize" and chosen and (st.get("config") or {}).get("backend") == "auto":
            out[st["name"]] = {"backend": chosen["backend"]}
        chosen = next((c for c in m.get("runtime_candidates") or [] if c.get("chosen")), None)
        if st["kind"] == "runtime" and chosen:
            out[st["name"]] = {"candidates": [chosen["candidate"]]}
    return out


def run_trial(setup: Setup, number: int, chain: list[dict]) -> dict:
    """Run one trial; returns its outcome: `state` complete | pruned | failed, `values` (drop first,
    then the objectives) when complete, and a summary of every stage it measured."""
    run_dir = setup.trial_dir(number)
    recipe = trial_recipe(setup, chain, f"trial-{number:04d}")
    keys = cache.chain_keys(recipe)
    names = [s.name for s in recipe.stages]
    kinds = {s.name: s.kind for s in recipe.stages}
    stages: list[dict] = []
    t0 = time.perf_counter()

    def on_stage(name: str, metrics: dict) -> None:
        cache.publish(setup.root / "cache", run_dir, recipe, keys)  # a killed worker loses one stage at most
        stages.append(stage_summary(name, kinds[name], metrics, setup))
        drop = stages[-1]["drop"]
        if name != names[-1] and drop is not None and drop > setup.limit + setup.prune_margin:
            raise StopTrial(name, drop)

    outcome: dict[str, Any] = {"run_dir": str(run_dir.relative_to(setup.root)), "chain_key": keys[-1],
                               "stages": stages}
    try:
        seeded = cache.seed_run(setup.root / "cache", run_dir, recipe, keys)
        results = run_recipe(recipe, run_dir, resume=bool(seeded), force=not seeded, source="frugal optimize",
                             trust_code=setup.trust_code, data=dataclasses.replace(setup.view), on_stage=on_stage)
    except StopTrial as stop:
        log.info("trial %d: %s (limit %.2f + prune margin %.2f)", number, stop, setup.limit, setup.prune_margin)
        _partial_report(run_dir)
        outcome.update(state="pruned", pruned_after=stop.stage, drop=stop.drop)
    except FrugalError as e:  # this pipeline does not work for this model: record why, search on
        log.info("trial %d failed: %s", number, e)
        outcome.update(state="failed", error=str(e))
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as e:  # library errors
        # not one of our clear errors: possibly a bug, so the traceback goes to the log (and run.log)
        log.warning("trial %d failed with %s: %s", number, type(e).__name__,
                    str(e).strip().splitlines()[0] if str(e).strip() else repr(e), exc_info=True)
        outcome.update(state="failed", error=f"{type(e).__name__}: {str(e).strip()[:300]}")
    else:
        last = results["stages"][-1]["metrics"]
        costs = [o.value(last) for o in setup.objectives]
        drop = setup.drop(last)
        missing = [o.name for o, c in zip(setup.objectives, costs) if c is None]
        if drop is None or missing:
            outcome.update(state="failed", error=f"not measured for this pipeline: {', '.join(missing) or 'quality'}")
        else:
            outcome.update(state="complete", drop=drop, values=[drop, *costs], pins=pins(results))
    outcome["seconds"] = round(time.perf_counter() - t0, 2)
    return outcome


def _partial_report(run_dir: Path) -> None:
    """A stopped trial's folder still gets its report (of the stages it ran)."""
    from frugalml.report import load_results, write_reports

    try:
        write_reports(run_dir, load_results(run_dir))
    except FrugalError:
        pass

"""`optimize()`: find the cheapest pipeline within an accuracy budget, by measurement.

Search folder (`--out`):
    optimize.json  what this folder is (its settings; resume/join check them)
    study.db       the Optuna study (default storage; `--storage` puts it elsewhere)
    base/          the base model's run (trained or loaded once; every trial loads its artifact)
    cache/         finished stages by chain key (expensive prefixes computed once)
    trials/NNNN/   one normal run folder per trial
    space.yaml     the search space actually searched
    front.json  best.yaml  report.md  report.html  trials-<objective>.png   rewritten after every trial
When the search ends, latency objectives re-time the best candidates in alternation (frugalml.optimize.retime)
and the choice is made on those timings; then the test split is read once for the final front.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from frugalml._io import atomic_write_json, atomic_write_text
from frugalml.errors import ConfigError
from frugalml.optimize import outputs
from frugalml.optimize.config import SETTINGS_COVER, SearchConfig, search_config
from frugalml.optimize.defaults import default_initial, default_space
from frugalml.optimize.report import closest_message
from frugalml.optimize.retime import entry, retime
from frugalml.optimize.space import check_space, initial_params, merge_space
from frugalml.optimize.study import Clock, open_study, optuna_module, storage_for, work
from frugalml.optimize.trial import Setup, selection_view
from frugalml.recipe import Recipe, apply_overrides, read_recipe_mapping, recipe_from_mapping

log = logging.getLogger("frugalml")
MARKER = "optimize.json"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between workers sharing the folder (released by the OS if one dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_source(source: str, data: str | None, root: str | None) -> tuple[dict, str]:
    """The recipe mapping of RECIPE, or a one-stage recipe loading ARTIFACT on `--data`."""
    from frugalml import artifact

    path = Path(source)
    if path.is_dir():
        if not data:
            raise ConfigError(f"{source}: an artifact needs --data SPEC (the data it was trained on)")
        spec = artifact.read_info(path)["spec"]
        kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if k != "activation"}
        model = {"name": spec["name"], "kwargs": kwargs, "activation": (spec.get("kwargs") or {}).get("activation", "relu")}
        raw = {"name": "search", "data": {"name": data, **({"root": root} if root else {})}, "model": model,
               "stages": [{"kind": "load", "name": "base", "path": str(path.resolve())}]}
        return raw, str(path)
    if data:
        raise ConfigError(f"--data: only with an ARTIFACT folder; a recipe names its data ({source})")
    return read_recipe_mapping(path), str(path)


def check_search_dir(root: Path, resume: bool, force: bool, joining: bool) -> None:
    """Like `frugal run`'s --out rules: only our folders are continued or replaced."""
    if root.is_symlink():
        raise ConfigError(f"{root}: is a symbolic link; give the real folder as --out")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a folder; choose another --out")
    ours = (root / MARKER).is_file()
    # hidden entries do not count: the marker's temporary file and the locks of a worker starting alongside
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()) and not ours:
        raise ConfigError(f"{root}: is not empty and is not a frugal optimize folder (no {MARKER}): choose another --out")
    if force and joining:
        raise ConfigError("--force with --storage: the study lives in that storage and would survive; use a new "
                          "storage or study folder instead")
    if ours and not (resume or force or joining):
        raise ConfigError(f"{root}: already holds a search; use --resume to continue it, --force to start over, "
                          "or another --out")
    if resume and not ours and not joining:
        raise ConfigError(f"{root}: nothing to resume (no {MARKER}); run without --resume")
    probe = next((p for p in [root, *root.parents] if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{probe}: not writable, so the search cannot be written to {root}")


def _check_task(view: Any) -> None:
    """Reference-based tasks (embeddings of unlabelled text) take their targets from a run's first
    stage; a trial's first stage is the base model, so base and trials would be judged against
    different references. Refused until the search binds one reference for all of them."""
    from frugalml.measure.task import needs_reference

    if needs_reference(view):
        raise ConfigError(f"frugal optimize: data task {view.task!r} is judged against a reference model's "
                          "outputs, which the search does not share between the base and its trials yet; "
                          "search on labelled data (task classification or regression)")


def prepare_base(root: Path, recipe: Recipe, base: str, view: Any, trust_code: bool) -> tuple[Path, dict]:
    """Run the recipe's stages up to `base` once into `root/base` (measured on val); its artifact is
    what every trial loads. Workers sharing the folder wait for whichever prepares it."""
    from frugalml.pipeline import STATE, is_run_dir, run_recipe
    from frugalml.report import load_results
    from frugalml.schemas import RunState, read_json

    names = [s.name for s in recipe.stages]
    if base not in names:
        raise ConfigError(f"search.base: {base!r} is not a stage of the recipe; allowed: {', '.join(names)}")
    run_dir = root / "base"
    with file_lock(root / ".base.lock"):
        if not (is_run_dir(run_dir) and read_json(run_dir / STATE, RunState).get("finished")):
            log.info("preparing the base model (stages %s) in %s", ", ".join(names[: names.index(base) + 1]), run_dir)
            base_recipe = recipe.model_copy(update={"stages": recipe.stages[: names.index(base) + 1]})
            run_recipe(base_recipe, run_dir, resume=is_run_dir(run_dir), source="frugal optimize (base)",
                       trust_code=trust_code, data=dataclasses.replace(view))
        stage = next(s for s in load_results(run_dir)["stages"] if s["name"] == base)
    return (run_dir / stage["artifact"]).resolve(), stage["metrics"]


def resolve_space(cfg: SearchConfig, recipe: Recipe, base_artifact: Path, trust_code: bool) -> dict:
    from frugalml import artifact
    from frugalml.measure.env import has_native_bf16

    model = artifact.load(base_artifact, trust_code=trust_code or recipe.user_factories())
    if getattr(model, "frugal_runtime", None):
        raise ConfigError(f"search.base: the base model is already a {model.frugal_runtime} model; search from the "
                          "float model it came from (search.base, or its artifact)")
    space = {}
    if cfg.default_space:
        space = default_space(model, cfg.objectives(), recipe.train.epochs, recipe.train.lr, has_native_bf16())
    space = merge_space(space, cfg.space)
    check_space(space)
    return space


def _check_objectives(cfg: SearchConfig, recipe: Recipe, base_metrics: dict | None = None) -> None:
    for o in cfg.objectives():
        if o.batch is not None and o.batch not in recipe.measure.batch_sizes:
            raise ConfigError(f"search.objective: {o.name} cannot be measured: measure.batch_sizes are "
                              f"{recipe.measure.batch_sizes}; add {o.batch} to them")
        if base_metrics is not None and o.value(base_metrics) is None:
            raise ConfigError(f"search.objective: {o.name} cannot be measured for this model (its base stage has "
                              "no such number); choose another objective")


def _settings(recipe: Recipe, base: str, space: dict, cfg: SearchConfig) -> str:
    what = {"recipe": recipe.model_dump(mode="json"), "base": base, "space": space,
            "objectives": [o.name for o in cfg.objectives()], "max_drop": cfg.max_drop}
    if cfg.select_margin:  # (absent when 0: folders from before the margin existed stay resumable)
        what["select_margin"] = cfg.select_margin
    if cfg.drop_as != "objective":  # (absent by default, for the same reason)
        what["drop_as"] = cfg.drop_as
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mark(root: Path, **fields: Any) -> None:
    marker = root / MARKER
    known = json.loads(marker.read_text()) if marker.is_file() else {"schema": 1}
    if fields.get("settings") and known.get("settings") not in (None, fields["settings"]):
        raise ConfigError(f"{root}: was started with another {SETTINGS_COVER} (see {MARKER}); resume with the same "
                          "ones (budget and trials may change), or use another --out")
    merged = {**known, **fields}
    if "created" in known:  # when the search started, not when it was last resumed
        merged["created"] = known["created"]
    atomic_write_json(marker, merged)


def optimize(source: str, *, data: str | None = None, root: str | None = None, overrides: list[str] | None = None,
             search: dict[str, Any] | None = None, out: str | None = None, storage: str | None = None,
             resume: bool = False, force: bool = False, trust_code: bool = False) -> dict:
    """Search pipelines for the recipe (or artifact) `source`; returns the summary (front.json's content,
    plus `stopped`: why the search ended). See frugalml.optimize for the folder it writes."""
    start = time.monotonic()
    raw, src = read_source(source, data, root)
    raw = apply_overrides(raw, overrides or [])
    cfg = search_config(raw.pop("search", None), search or {})
    recipe = recipe_from_mapping(raw, src)
    _check_objectives(cfg, recipe)
    if not cfg.default_space:  # the user's space alone: its mistakes are found before any work
        check_space(cfg.space)
    base = cfg.base or recipe.stages[-1].name
    folder = Path(out) if out else Path("runs") / f"{recipe.name}-optimize"
    check_search_dir(folder, resume, force, joining=storage is not None)
    optuna_module()  # missing Optuna is one line before any work
    from frugalml.data import load_data

    view = selection_view(load_data(recipe.data))
    _check_task(view)
    if force and (folder / MARKER).is_file():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _mark(folder, recipe=recipe.name, source=src, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    base_artifact, base_metrics = prepare_base(folder, recipe, base, view, trust_code)
    _check_objectives(cfg, recipe, base_metrics)
    space = resolve_space(cfg, recipe, base_artifact, trust_code)
    settings = _settings(recipe, base, space, cfg)
    _mark(folder, settings=settings, objectives=[o.name for o in cfg.objectives()], max_drop=cfg.max_drop,
          select_margin=cfg.select_margin, drop_as=cfg.drop_as, storage=storage or "sqlite: study.db")
    atomic_write_text(folder / "space.yaml", yaml.safe_dump(space, sort_keys=False))
    clock = Clock(cfg.budget_seconds(), start)
    study = open_study(storage_for(storage, folder), f"frugal-{recipe.name}", settings, cfg)
    _seed_sampler(study, cfg, joined=storage is not None)
    if clock.left() <= 0 and not _finished(study):
        raise ConfigError(f"--budget {cfg.budget}: too small for one trial: preparing the base model took "
                          f"{clock.elapsed():.0f} s; give a larger budget (the base is kept: add --resume)")
    _enqueue_initial(study, space, cfg)
    setup = Setup(root=folder, recipe=recipe, base_artifact=base_artifact, base_metrics=base_metrics, view=view,
                  objectives=cfg.objectives(), max_drop=cfg.max_drop, prune_margin=cfg.prune_margin,
                  select_margin=cfg.select_margin,
                  trust_code=trust_code, space=space)

    def after_trial() -> None:
        with file_lock(folder / ".outputs.lock"):
            outputs.write_outputs(folder, outputs.summarize(study, setup, cfg), setup, cfg)

    reason, ran = work(setup, study, cfg, clock, after_trial)
    log.info("search stopped: %s (%d trials run by this worker)", reason, ran)
    if not _finished(study):
        if reason.startswith("budget"):
            raise ConfigError(f"--budget {cfg.budget}: too small for one trial here; give a larger budget "
                              "(what finished is kept: add --resume)")
        errors = sorted({str(t.user_attrs.get("error")) for t in study.get_trials(deepcopy=False)
                         if "error" in t.user_attrs})
        raise ConfigError(f"no trial finished ({reason}): every pipeline failed: {'; '.join(errors[:3])}")
    with file_lock(folder / ".outputs.lock"):
        summary = outputs.summarize(study, setup, cfg)
        others = [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        if others:  # workers still training on shared cores would distort it; the last one to stop re-times
            log.info("re-timing left to the worker that stops last (trials %s still running)", others)
        elif summary["best"] is not None:
            timed = retime(folder, summary, setup, cfg)
            if timed is not None:
                summary["retimed"], summary["best"] = timed, timed["best"]
        summary["final"] = outputs.final_test(folder, summary, setup)
        summary["stopped"], summary["seconds"] = reason, round(clock.elapsed(), 1)
        outputs.write_outputs(folder, summary, setup, cfg)
    summary["folder"] = str(folder)
    if summary["best"] is None:
        within = f"--max-drop {cfg.max_drop}" + (f" less --select-margin {cfg.select_margin}" if cfg.select_margin else "")
        raise ConfigError(f"no trial stayed within {within} points (val); closest: "
                          f"{closest_message(summary)}; kept in {folder} (front.json, closest.yaml, trials/)")
    return summary


def _finished(study: Any) -> bool:
    return any(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))


def _seed_sampler(study: Any, cfg: SearchConfig, joined: bool) -> None:
    """A resumed search does not replay its first proposals; workers joining through --storage each
    draw their own (the seed plus their process id)."""
    from frugalml.optimize.study import make_sampler

    offset = len(study.get_trials(deepcopy=False)) + (os.getpid() if joined else 0)
    study.sampler = make_sampler(cfg, cfg.seed + offset)


def _enqueue_initial(study: Any, space: dict, cfg: SearchConfig) -> None:
    """The obvious pipelines first, once per study (whichever worker gets there first)."""
    if study.user_attrs.get("initial_enqueued"):
        return
    study.set_user_attr("initial_enqueued", True)
    wanted = cfg.initial if cfg.initial is not None else default_initial(cfg.objectives())
    for params in initial_params(space, wanted):
        study.enqueue_trial(params, skip_if_exists=True)


def print_summary(summary: dict, out: str | None = None) -> None:
    """What `frugal optimize` prints at the end."""
    rows = {r["number"]: r for r in summary["trials"]}
    best = rows[summary["best"]]
    test = (summary.get("final") or {}).get("trials", {}).get(str(best["number"]), {})
    costs = ", ".join(f"{k} {v:.4g}" for k, v in best["costs"].items())
    print(f"search stopped: {summary['stopped']}; trials: "
          + ", ".join(f"{v} {k}" for k, v in summary["counts"].items()))
    print(f"best: trial {best['number']}: {best['pipeline']}")
    print(f"      val drop {best['drop']:.2f} points" + (f", test drop {test['drop']:.2f}" if test.get("drop") is not None
                                                       else "") + f"; {costs}")
    timed = summary.get("retimed")
    if timed:
        mine = entry(timed, "trial", best["number"])
        assert mine is not None  # the choice is always one of the re-timed trials
        others = ", ".join(f"{e['key']} {e['median']:.3f}" for e in timed["entries"] if e is not mine)
        print(f"      {timed['objective']} re-timed in {timed['rounds']} alternating rounds: {mine['median']:.3f} ms"
              + (f" (others, ms: {others})" if others else ""))
    folder = Path(summary["folder"])
    print(f"recipe: {folder / 'best.yaml'}  front: {folder / 'front.json'}  report: {folder / 'report.html'}")

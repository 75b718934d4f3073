"""Runs a recipe's stages, measures each the same way, and writes the run directory.

Run directory (versioned by `results.json["schema"]`, see docs/ARCHITECTURE.md):
    results.json  report.md  report.html  recipe.yaml (resolved)  run.log  state.json
    stages/<name>/  model.json + weights (the artifact), metrics.json, work/ (checkpoints)

`state.json` lists the completed stages; a stage counts as done only once its artifact and
metrics.json are written, so an interrupted run resumes at the first unfinished stage (and a
training stage resumes from its last epoch checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml._io import atomic_write_json, atomic_write_text
from frugalml.config import Config
from frugalml.errors import ConfigError, FrugalError
from frugalml.recipe import dump_recipe
from frugalml.stages import StageConfig, StageContext, handler_for

SCHEMA_VERSION = 1
log = logging.getLogger("frugalml")


def recipe_hash(recipe: Config) -> str:
    text = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _attach_file_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def _prepare_run_dir(run_dir: Path, recipe: Config, resume: bool, force: bool) -> dict:
    state_path = run_dir / "state.json"
    digest = recipe_hash(recipe)
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume and state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("recipe_hash") != digest:
                raise ConfigError(
                    f"{run_dir}: was started with a different recipe; resume with the same recipe and "
                    "--set values, or use another --out"
                )
            return state
        if not force and not resume:
            raise ConfigError(f"{run_dir}: already exists; use --resume to continue it, --force to overwrite, or another --out")
        if force:
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"recipe_hash": digest, "completed": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(state_path, state)
    return state


def measure_stage(model: nn.Module, data: Any, measure_cfg: Any, stage_dir: Path | None) -> dict:
    """The same measurement for every stage; wrappers around other runtimes are measured via predict."""
    from frugalml.measure import measure

    runtime = getattr(model, "frugal_runtime", None)
    if runtime is None:
        return measure(model, data, measure_cfg, artifact_dir=stage_dir)
    cost_model = getattr(model, "frugal_cost_model", None)
    return measure(cost_model, data, measure_cfg, artifact_dir=stage_dir, runtime=runtime, predict=model)


def run_stage(
    stage: StageConfig, model: nn.Module | None, spec: dict, data: Any, recipe: Config, stage_dir: Path,
    resume: bool, parent_metrics: dict | None,
) -> tuple[nn.Module, dict, dict]:
    """Apply one stage to a copy of `model`; save its artifact; measure it. Returns (model, spec, metrics)."""
    ctx = StageContext(
        data=data, model_spec=copy.deepcopy(spec), stage_dir=stage_dir, train_defaults=recipe.train,
        measure_config=recipe.measure, seed=recipe.seed, resume=resume, log=log, parent_metrics=parent_metrics,
    )
    (stage_dir / "work").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = handler_for(stage)(copy.deepcopy(model) if model is not None else None, stage, ctx)
    seconds = time.perf_counter() - t0
    out.eval()
    artifact.save_any(out, stage_dir, ctx.model_spec, ctx.artifact_meta)
    metrics = measure_stage(out, data, recipe.measure, stage_dir)
    metrics.update(ctx.extra_metrics)
    metrics["stage_seconds"] = round(seconds, 2)
    return out, ctx.model_spec, metrics


def run_recipe(
    recipe: Config, run_dir: str | Path, *, resume: bool = False, force: bool = False, source: str = "recipe"
) -> dict:
    """Run every stage of `recipe` into `run_dir`; returns the results dict (also written to disk)."""
    from frugalml.data import load_data
    from frugalml.measure import environment
    from frugalml.report import write_reports

    run_dir = Path(run_dir)
    state = _prepare_run_dir(run_dir, recipe, resume, force)
    handler = _attach_file_log(run_dir)
    try:
        atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        threads = recipe.measure.threads or torch.get_num_threads()
        torch.set_num_threads(threads)
        data = load_data(recipe.data)
        log.info("data %s", data.describe())
        base_spec = recipe.model.spec(data.input_shape, data.num_classes)
        models: dict[str, tuple[nn.Module, dict]] = {}
        stage_results: list[dict] = []
        results = {
            "schema": SCHEMA_VERSION, "recipe": recipe.name, "source": source,
            "env": environment(threads), "data": data.describe(), "stages": stage_results,
        }
        prev: str | None = None
        for stage in recipe.stages:
            parent = None if stage.starts_fresh() else (stage.parent or prev)
            stage_dir = run_dir / "stages" / stage.name
            parent_model, parent_spec = models.get(parent, (None, base_spec)) if parent else (None, base_spec)
            parent_metrics = next((s["metrics"] for s in stage_results if s["name"] == parent), None)
            if stage.name in state["completed"] and (stage_dir / "metrics.json").is_file():
                log.info("stage %s: already complete, loading its artifact", stage.name)
                model = artifact.load(stage_dir)
                spec = artifact.read_info(stage_dir)["spec"]
                metrics = json.loads((stage_dir / "metrics.json").read_text())
            else:
                log.info("stage %s (%s) from %s", stage.name, stage.kind, parent or "scratch")
                try:
                    model, spec, metrics = run_stage(
                        stage, parent_model, parent_spec, data, recipe, stage_dir, resume, parent_metrics
                    )
                except FrugalError:
                    # bad input for this stage: leave nothing half-written (an interrupted stage, in
                    # contrast, keeps its checkpoints under work/ so --resume can continue it)
                    shutil.rmtree(stage_dir, ignore_errors=True)
                    raise
                atomic_write_json(stage_dir / "metrics.json", metrics)
                state["completed"].append(stage.name)
                atomic_write_json(run_dir / "state.json", state)
            models[stage.name] = (model, spec)
            stage_results.append({
                "name": stage.name, "kind": stage.kind, "parent": parent,
                "artifact": f"stages/{stage.name}", "config": stage.model_dump(mode="json"), "metrics": metrics,
            })
            log.info("stage %s: accuracy %.4f, b64 %.3f ms", stage.name, metrics.get("accuracy") or float("nan"),
                     (metrics.get("latency_ms") or {}).get("b64", {}).get("median", float("nan")))
            atomic_write_json(run_dir / "results.json", results)
            prev = stage.name
        state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(run_dir / "state.json", state)
        write_reports(run_dir, results)
        return results
    finally:
        log.removeHandler(handler)
        handler.close()

"""Runs a recipe's stages, measures each the same way, and writes the run directory.

Run directory (versioned by `results.json["schema"]`, see docs/ARCHITECTURE.md):
    results.json  report.md  report.html  recipe.yaml (resolved)  run.log  state.json
    stages/<name>/  model.json + weights (the artifact), metrics.json, work/ (checkpoints)

`state.json` lists the completed stages; a stage counts as done only once its artifact and
metrics.json are written, so an interrupted run resumes at the first unfinished stage (and a
training stage resumes from its last epoch checkpoint).

Safety: every path written or removed is checked to lie inside the run directory; an existing
folder is only replaced (`force`) or continued (`resume`) when it is a frugalml run (has our
state.json); input errors found while a run starts leave no folder behind.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml._io import atomic_write_json, atomic_write_text
from frugalml.data import DataBundle, load_data
from frugalml.errors import ArtifactError, ConfigError, FrugalError
from frugalml.measure import MeasureConfig, environment, measure
from frugalml.measure.task import bind_reference
from frugalml.recipe import Recipe, dump_recipe
from frugalml.recipe_hash import legacy_recipe_hash, recipe_hash
from frugalml.schemas import SCHEMA_VERSION, RunState, StageMetrics, read_json
from frugalml.stages import StageConfig, StageContext, handler_for
from frugalml.train import distributed

log = logging.getLogger("frugalml")
STATE = "state.json"


def inside(run_dir: Path, path: Path) -> Path:
    """`path`, after checking it lies inside `run_dir` (symlinks resolved): never touch anything else."""
    root, target = run_dir.resolve(), path.resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"{path}: refusing to write or delete outside the run directory {run_dir}")
    return path


def is_run_dir(path: Path) -> bool:
    return (path / STATE).is_file()


def _attach_file_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(inside(run_dir, run_dir / "run.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def check_output_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Everything that can be said about --out before any work: refuse what would lose user files."""
    if run_dir.is_symlink():
        raise ConfigError(f"{run_dir}: is a symbolic link; give the real folder as --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: exists and is not a folder; choose another --out")
    nonempty = run_dir.is_dir() and any(run_dir.iterdir())
    if nonempty and not is_run_dir(run_dir):
        what = "--resume" if resume else "--force" if force else "it"
        raise ConfigError(
            f"{run_dir}: is not empty and is not a frugalml run (no {STATE}); {what} would touch files "
            "that are not ours: choose another --out"
        )
    if nonempty and not (resume or force):
        raise ConfigError(f"{run_dir}: already exists; use --resume to continue it, --force to overwrite, or another --out")
    if resume and not nonempty:
        raise ConfigError(f"{run_dir}: nothing to resume (no {STATE}); run without --resume")
    probe = run_dir if run_dir.is_dir() else next((p for p in run_dir.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise ConfigError(f"{probe}: is not a folder, so {run_dir} cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{probe}: not writable, so the run cannot be written to {run_dir}")


def _prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, force: bool) -> dict:
    digest = recipe_hash(recipe)
    state_path = run_dir / STATE
    if resume and is_run_dir(run_dir):
        state = read_json(state_path, RunState)
        if state.get("recipe_hash") not in (digest, legacy_recipe_hash(recipe)):
            raise ConfigError(
                f"{run_dir}: was started with a different recipe; resume with the same recipe and "
                "--set values, or use another --out"
            )
        return state
    if force and is_run_dir(run_dir):
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({e.strerror or e})") from None
    state = {"recipe_hash": digest, "completed": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(state_path, state)
    return state


def measure_stage(model: nn.Module, data: DataBundle, measure_cfg: MeasureConfig | None, stage_dir: Path | None) -> dict:
    """The same measurement for every stage; wrappers around other runtimes are measured via predict."""
    files = artifact.artifact_files(stage_dir) if stage_dir is not None else None
    runtime = getattr(model, "frugal_runtime", None)
    if runtime is None:
        return measure(model, data, measure_cfg, files=files)
    cost_model = getattr(model, "frugal_cost_model", None)
    metrics = measure(cost_model, data, measure_cfg, files=files, runtime=runtime, predict=model)
    own = model.nonzero_params() if hasattr(model, "nonzero_params") else None
    if own is not None:  # counted in the stage's own weights, not copied from the float model
        metrics["nonzero_params"] = own
    return metrics


def _check_parent(stage: StageConfig, parent: str | None, models: dict[str, nn.Module], parents: dict) -> None:
    """A stage that needs a float model must not start from a quantized runtime: name the one to use."""
    model = models.get(parent) if parent else None
    if model is None or getattr(type(stage), "accepts_quantized", False):
        return
    runtime = getattr(model, "frugal_runtime", None)
    if runtime is None:
        return
    ancestor = parents.get(parent)
    while ancestor is not None and getattr(models.get(ancestor), "frugal_runtime", None) is not None:
        ancestor = parents.get(ancestor)
    instead = f"set parent: {ancestor} (the float model it came from)" if ancestor else "start from a float model"
    raise ConfigError(
        f"stages.{stage.name}.parent: stage {parent!r} holds a {runtime} model, which a {stage.kind} stage "
        f"cannot start from; {instead}"
    )


def _first_stage_references(model: nn.Module, ctx: StageContext) -> dict:
    """fp32 runtimes of the model the run starts from, timed like it: every later stage's end-to-end
    speedup is also stated against the best of them (not only against eager)."""
    from frugalml.compress.quantize.select import reference_latencies

    names = list(ctx.measure_config.references) if ctx.measure_config else []
    if not names:
        return {}
    refs, notes = reference_latencies(model, ctx.data, names, ctx.measure_config, ctx.log)
    return {"reference_latency_ms": refs, **({"reference_notes": notes} if notes else {})}


def run_stage(stage: StageConfig, model: nn.Module | None, spec: dict, ctx: StageContext,
              first: bool = False) -> tuple[nn.Module, dict, dict]:
    """Apply one stage to a copy of `model`; save its artifact; measure it (a stage that starts a
    chain also times its fp32 runtime references). Returns (model, spec, metrics)."""
    if not distributed.is_main() and not stage.trains():
        # several processes: a stage that does not train (int8 conversion, a runtime choice) is built
        # and timed by rank 0 alone -- timing on every rank at once would bias its choice -- and the
        # others load its artifact afterwards
        return model, ctx.model_spec, {}
    inside(ctx.stage_dir.parents[1], ctx.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    distributed.drain_fit_stats()
    out = handler_for(stage)(copy.deepcopy(model) if model is not None else None, stage, ctx)
    seconds = time.perf_counter() - t0
    out.eval()
    fits = distributed.drain_fit_stats()  # per Trainer.fit: processes, throughput, bytes communicated
    if first:  # a task judged against a reference (embeddings) takes the run's first model's outputs as targets
        bind_reference(ctx.data, out, f"stage {stage.name}")
    if not distributed.is_main():  # several processes: rank 0 saves and measures, the others wait for it
        return out, ctx.model_spec, {}
    artifact.save_any(out, ctx.stage_dir, ctx.model_spec, ctx.artifact_meta)
    metrics = measure_stage(out, ctx.data, ctx.measure_config, ctx.stage_dir)
    if first and getattr(out, "frugal_runtime", None) is None and ctx.measure_config is not None:
        metrics.update(_first_stage_references(out, ctx))
    metrics.update(ctx.extra_metrics)
    if fits:
        metrics["distributed"] = fits
    metrics["stage_seconds"] = round(seconds, 2)
    return out, ctx.model_spec, metrics


def _precheck(recipe: Recipe, data: DataBundle | None = None) -> DataBundle:
    """Input errors that can be found before the first file is written: data, load paths."""
    data = load_data(recipe.data) if data is None else data
    if len(data.y_test) == 0 and recipe.measure.accuracy:
        raise ConfigError(f"data: dataset {data.name!r} has an empty test split, so no accuracy can be reported")
    for i, st in enumerate(recipe.stages):
        path = getattr(st, "path", None)
        if st.kind == "load" and path is not None:
            try:
                spec = artifact.read_info(path)["spec"]
            except ArtifactError as e:
                raise ConfigError(f"stages.{i}.path: {e}") from None
            data.check_fits(spec, f"stages.{i}.path: {path}")
    return data


def _load_completed(stage_dir: Path, trust: Any) -> tuple[nn.Module, dict, dict]:
    model = artifact.load(stage_dir, trust_code=trust)
    spec = artifact.read_info(stage_dir)["spec"]
    metrics = read_json(stage_dir / "metrics.json", StageMetrics)
    return model, spec, metrics


def run_recipe(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, force: bool = False,
               source: str = "recipe", trust_code: bool = False, data: DataBundle | None = None,
               on_stage: Callable[[str, dict], None] | None = None) -> dict:
    """Run every stage of `recipe` into `run_dir`; returns the results dict (also written to disk).
    `trust_code`: artifacts may import any user factory (else only those the recipe names).
    `data`: this bundle instead of loading `recipe.data` (frugal optimize passes a view whose test
    split is the val split). `on_stage(name, metrics)` is called once each stage is recorded (done or
    loaded on resume); an exception it raises stops the run, keeping the stages already done."""
    from frugalml.report import write_reports

    run_dir = Path(run_dir)
    rank, _, nprocs = distributed.world()  # several processes (torchrun): all train, rank 0 writes
    main = rank == 0
    if main:
        check_output_dir(run_dir, resume, force)
    if nprocs > 1:
        distributed.init_process_group(recipe.train.distributed)
    # several processes share the machine's thread budget (OMP_NUM_THREADS, set by the launcher)
    threads = (recipe.measure.threads if nprocs == 1 else None) or torch.get_num_threads()
    torch.set_num_threads(threads)
    data = _precheck(recipe, data)
    created = not run_dir.exists()
    state = distributed.share_from_main(_prepare_run_dir(run_dir, recipe, resume, force) if main else None)
    handler = _attach_file_log(run_dir) if main else None
    trust: bool | frozenset[str] = True if trust_code else recipe.user_factories()
    try:
        if main:
            atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        log.info("data %s", data.describe())
        base_spec = recipe.model.spec(data.input_shape, data.num_classes)
        models: dict[str, nn.Module] = {}
        specs: dict[str, dict] = {}
        parents: dict[str, str | None] = {}
        stage_results: list[dict] = []
        results = {
            "schema": SCHEMA_VERSION, "recipe": recipe.name, "source": source,
            "env": environment(threads), "data": data.describe(), "stages": stage_results,
        }
        if nprocs > 1:
            results["env"]["processes"] = nprocs
        prev: str | None = None
        for stage in recipe.stages:
            parent = None if stage.starts_fresh() else (stage.parent or prev)
            stage_dir = inside(run_dir, run_dir / "stages" / stage.name)
            _check_parent(stage, parent, models, parents)
            parent_metrics = next((s["metrics"] for s in stage_results if s["name"] == parent), None)
            if stage.name in state["completed"] and (stage_dir / "metrics.json").is_file():
                log.info("stage %s: already complete, loading its artifact", stage.name)
                model, spec, metrics = _load_completed(stage_dir, trust)
                if parent is None:
                    bind_reference(data, model, f"stage {stage.name}")
            else:
                log.info("stage %s (%s) from %s", stage.name, stage.kind, parent or "scratch")
                ctx = StageContext(
                    data=data, model_spec=copy.deepcopy(specs.get(parent, base_spec) if parent else base_spec),
                    stage_dir=stage_dir, train_defaults=recipe.train, measure_config=recipe.measure,
                    seed=recipe.seed, resume=resume, log=log, parent_metrics=parent_metrics,
                    stage_models=models, trust_code=trust,
                )
                try:
                    model, spec, metrics = run_stage(stage, models.get(parent) if parent else None,
                                                     ctx.model_spec, ctx, first=parent is None)
                except FrugalError:
                    # bad input for this stage: leave nothing half-written (an interrupted stage, in
                    # contrast, keeps its checkpoints under work/ so --resume can continue it)
                    if main:
                        shutil.rmtree(stage_dir, ignore_errors=True)
                    raise
                state["completed"].append(stage.name)
                if main:
                    atomic_write_json(stage_dir / "metrics.json", metrics)
                    atomic_write_json(run_dir / STATE, state)
                if nprocs > 1:  # the others wait for rank 0's artifact and continue from it
                    metrics = distributed.share_from_main(metrics)
                    if not main:
                        model, spec, _ = _load_completed(stage_dir, trust)
            models[stage.name], specs[stage.name], parents[stage.name] = model, spec, parent
            results["data"] = data.describe()  # a reference-based task knows its output width now
            stage_results.append({
                "name": stage.name, "kind": stage.kind, "parent": parent,
                "artifact": f"stages/{stage.name}", "config": stage.model_dump(mode="json"), "metrics": metrics,
            })
            lat = metrics.get("latency_ms") or {}
            big = max(lat, key=lambda b: int(b[1:]), default="b64")  # the largest batch measured
            log.info("stage %s: %s %.4f, %s %.3f ms", stage.name, metrics.get("quality_metric") or "accuracy",
                     metrics.get("quality", metrics.get("accuracy")) or float("nan"), big,
                     lat.get(big, {}).get("median", float("nan")))
            if main:
                atomic_write_json(run_dir / "results.json", results)
            if on_stage is not None:
                on_stage(stage.name, metrics)
            prev = stage.name
        state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if main:
            atomic_write_json(run_dir / STATE, state)
            write_reports(run_dir, results)
        return results
    except FrugalError:
        if main and created and not state["completed"]:
            shutil.rmtree(inside(run_dir, run_dir), ignore_errors=True)  # ours, made by this call, nothing done
        raise
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()

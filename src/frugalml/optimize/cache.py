"""Expensive prefixes computed once: finished stages of any trial are kept under `DIR/cache/<key>`,
and a trial whose chain starts with cached stages gets them copied into its run folder as completed
stages, so `run_recipe(resume=True)` loads them instead of running them (the pipeline's own resume).

The key of a stage is a hash of the recipe sections that shape models and numbers (seed, data, model,
train, measure) and of every stage config up to and including it: the same pruning after the same
base is the same artifact, whatever comes after it. Entries are immutable once published (written
to a temporary folder, then renamed), so several workers can share the cache without locks. Files
are hard-linked where the file system allows (artifacts are only ever replaced, never edited).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from frugalml._io import atomic_write_json
from frugalml.pipeline import STATE, inside, recipe_hash
from frugalml.recipe import Recipe
from frugalml.schemas import RunState, read_json

log = logging.getLogger("frugalml")
SECTIONS = {"seed", "data", "model", "train", "measure"}


def chain_keys(recipe: Recipe) -> list[str]:
    """One key per stage of `recipe`: what it computes, given everything before it."""
    digest = hashlib.sha256(json.dumps(recipe.model_dump(mode="json", include=SECTIONS), sort_keys=True).encode())
    keys = []
    for stage in recipe.stages:
        digest.update(json.dumps(stage.model_dump(mode="json"), sort_keys=True).encode())
        keys.append(digest.copy().hexdigest()[:24])
    return keys


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_stage(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("work", ".*.tmp"))


def seed_run(cache: Path, run_dir: Path, recipe: Recipe, keys: list[str]) -> list[str]:
    """Copy the cached prefix of `recipe`'s chain into a new `run_dir` as completed stages; returns
    their names (none: nothing cached, `run_dir` untouched)."""
    names: list[str] = []
    for stage, key in zip(recipe.stages, keys):
        if not (cache / key / "metrics.json").is_file():
            break
        names.append(stage.name)
    if not names:
        return []
    if run_dir.exists():
        shutil.rmtree(inside(run_dir, run_dir))
    try:
        for name, key in zip(names, keys):
            _copy_stage(cache / key, inside(run_dir, run_dir / "stages" / name))
    except OSError as e:  # the cache only saves time: run the whole chain instead
        log.warning("stage cache: could not copy into %s (%s)", run_dir, e.strerror or e)
        shutil.rmtree(run_dir, ignore_errors=True)
        return []
    atomic_write_json(run_dir / STATE, {"recipe_hash": recipe_hash(recipe), "completed": names,
                                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return names


def publish(cache: Path, run_dir: Path, recipe: Recipe, keys: list[str]) -> None:
    """Put every completed stage of `run_dir` that the cache lacks into it (atomically, by rename)."""
    if not (run_dir / STATE).is_file():
        return
    done = set(read_json(run_dir / STATE, RunState).get("completed", []))
    for stage, key in zip(recipe.stages, keys):
        if stage.name not in done:
            break
        target, src = cache / key, run_dir / "stages" / stage.name
        if target.exists() or not (src / "metrics.json").is_file():
            continue
        tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _copy_stage(src, tmp)
            os.rename(tmp, target)
        except OSError as e:  # published by another worker meanwhile (the same stage), or no room: the cache
            shutil.rmtree(tmp, ignore_errors=True)  # only saves time, so the trial goes on without it
            if not target.exists():
                log.warning("stage cache: could not keep %s (%s)", src, e.strerror or e)

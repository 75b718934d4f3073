"""Run folders: --out, --force and --resume never lose a user's files, never write outside the run
folder, and refuse what is not a frugalml run with one line."""

from __future__ import annotations

import os

import pytest

from frugalml.errors import ConfigError
from frugalml.pipeline import inside
from tests.conftest import tiny_recipe
from tests.reliability.conftest import assert_clean_error, snapshot, write_recipe


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "r.yaml", tiny_recipe())


def _user_folder(tmp_path):
    d = tmp_path / "thesis"
    (d / "chapters").mkdir(parents=True)
    (d / "chapters" / "one.tex").write_text("years of work")
    (d / "notes.txt").write_text("keep me")
    return d


@pytest.mark.parametrize("flag", ["--force", "--resume", None])
def test_existing_user_folder_is_never_touched(flag, tmp_path, recipe, cli):
    """Security/data loss: --force once deleted any folder given as --out, with the user's files."""
    out = _user_folder(tmp_path)
    before = snapshot(tmp_path)
    res = cli("run", recipe, "--out", out, *([flag] if flag else []))
    assert_clean_error(res, "thesis", "not a frugalml run")
    assert snapshot(tmp_path) == before


def test_force_replaces_a_real_run(tmp_path, recipe, cli):
    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    (out / "stages" / "baseline" / "stale.txt").write_text("old")
    assert cli("run", recipe, "--out", out, "--force").code == 0
    assert not (out / "stages" / "baseline" / "stale.txt").exists() and (out / "results.json").is_file()


def test_force_on_an_empty_folder_is_fine(tmp_path, recipe, cli):
    (tmp_path / "empty").mkdir()
    assert cli("run", recipe, "--out", tmp_path / "empty", "--force").code == 0


def test_existing_run_without_flags(tmp_path, recipe, cli):
    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", out), "already exists", "--resume", "--force")
    assert snapshot(tmp_path) == before


def test_resume_with_another_recipe(tmp_path, recipe, cli):
    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", out, "--resume", "--set", "seed=7"), "different recipe")
    assert snapshot(tmp_path) == before


def test_recipe_hash_counts_what_differs_from_the_defaults_and_every_kind():
    """A field added later at its default must not orphan older run folders; a changed value, or another
    stage kind / loss type whose other fields are all defaults, must still count."""
    from frugalml.recipe import recipe_from_mapping
    from frugalml.recipe_hash import _as_written, recipe_hash

    def digest(**over):
        return recipe_hash(recipe_from_mapping(tiny_recipe(**over), "r.yaml"))

    written = _as_written(recipe_from_mapping(tiny_recipe(), "r.yaml"))
    assert written["train"] == {"epochs": 2, "batch_size": 32}  # lr 0.05 is the default; a new field joins them
    assert written["stages"] == [{"kind": "train", "name": "baseline"}]
    base = digest()
    assert digest(train={"epochs": 2, "batch_size": 32, "lr": 0.05, "weight_decay": 5e-4}) == base  # its default
    assert digest(seed=7) != base
    stages = [{"kind": "train", "name": "baseline"}, {"kind": "distill", "name": "s", "teacher": "baseline"}]
    kd = digest(stages=stages)
    dist = digest(stages=[stages[0], {**stages[1], "loss": {"type": "dist"}}])
    assert len({base, kd, dist}) == 3
    # in a stage's train overrides an explicit null clears the recipe's value: it counts
    cleared = digest(stages=[{"kind": "train", "name": "baseline", "train": {"augment": None}}])
    assert cleared != base


def test_resume_accepts_a_run_folder_hashed_the_old_way(tmp_path, recipe, cli):
    """Run folders written before the hash skipped defaults hold the hash of every value."""
    import json

    from frugalml.recipe import load_recipe
    from frugalml.recipe_hash import legacy_recipe_hash

    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    state = json.loads((out / "state.json").read_text())
    state["recipe_hash"] = legacy_recipe_hash(load_recipe(recipe)[0])
    (out / "state.json").write_text(json.dumps(state))
    assert cli("run", recipe, "--out", out, "--resume").code == 0
    state["recipe_hash"] = "0" * 16
    (out / "state.json").write_text(json.dumps(state))
    assert_clean_error(cli("run", recipe, "--out", out, "--resume"), "different recipe")


def test_resume_with_nothing_to_resume(tmp_path, recipe, cli):
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", tmp_path / "new", "--resume"), "nothing to resume")
    assert snapshot(tmp_path) == before


def test_resume_with_corrupt_state(tmp_path, recipe, cli):
    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    (out / "state.json").write_text('{"completed": "all"}')
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", out, "--resume"), "state.json")
    assert snapshot(tmp_path) == before


def test_resume_with_corrupt_metrics(tmp_path, recipe, cli):
    out = tmp_path / "run"
    assert cli("run", recipe, "--out", out).code == 0
    (out / "stages" / "baseline" / "metrics.json").write_text('{"accuracy": "high"}')
    assert_clean_error(cli("run", recipe, "--out", out, "--resume"), "metrics.json", "accuracy")


@pytest.mark.parametrize("where", ["file", "under-file", "symlink"])
def test_out_that_cannot_be_a_run_folder(where, tmp_path, recipe, cli):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    out = {"file": tmp_path / "afile", "under-file": tmp_path / "afile" / "run", "symlink": tmp_path / "link"}[where]
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", out), "afile" if where != "symlink" else "symbolic link")
    assert snapshot(tmp_path) == before


def test_stage_name_cannot_reach_outside(tmp_path, cli):
    """Security: a stage named ../../victim once wrote there, and its failure cleanup deleted it."""
    victim = _user_folder(tmp_path)
    raw = tiny_recipe(stages=[{"kind": "train", "name": "base"},
                              {"kind": "prune", "name": "../../thesis", "ratio": 0.5}])
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    before = snapshot(tmp_path)
    res = cli("run", recipe, "--out", tmp_path / "runs" / "x")
    assert_clean_error(res, "stages.1.name", "not a valid name")
    assert snapshot(tmp_path) == before and (victim / "notes.txt").read_text() == "keep me"


def test_recipe_name_cannot_reach_outside(tmp_path, cli, monkeypatch):
    _user_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(name="../thesis"))
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe), "r.yaml: name:")  # default --out is runs/<name>
    assert snapshot(tmp_path) == before


def test_every_pipeline_path_is_checked_to_be_inside(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert inside(run, run / "stages" / "a") == run / "stages" / "a"
    for bad in (run / ".." / "x", tmp_path, run / "stages" / ".." / ".." / "y"):
        with pytest.raises(ConfigError, match="outside the run directory"):
            inside(run, bad)
    os.symlink(tmp_path, run / "escape")
    with pytest.raises(ConfigError):
        inside(run, run / "escape" / "z")


def test_a_failure_before_any_stage_leaves_no_folder(tmp_path, cli):
    """A model factory that fails at build time: the run folder this call made is removed again."""
    raw = tiny_recipe(model={"name": "no_such_module_xyz:make"})
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", tmp_path / "run"), "no_such_module_xyz")
    assert snapshot(tmp_path) == before
    # and the fixed command works
    write_recipe(recipe, tiny_recipe())
    assert cli("run", recipe, "--out", tmp_path / "run").code == 0


def test_load_stage_path_that_is_not_an_artifact(tmp_path, cli):
    (tmp_path / "notart").mkdir()
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(stages=[{"kind": "load", "path": str(tmp_path / "notart")}]))
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", tmp_path / "run"), "stages.0.path", "not a frugalml artifact")
    assert snapshot(tmp_path) == before


def test_load_stage_with_other_shapes(tmp_path, cli):
    from tests.reliability.conftest import save_tiny_artifact

    art = save_tiny_artifact(tmp_path / "art")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(data={"name": "digits"},
                                                           stages=[{"kind": "load", "path": str(art)}]))
    before = snapshot(tmp_path)
    assert_clean_error(cli("run", recipe, "--out", tmp_path / "run"), "stages.0.path", "[1, 8, 8] with 4 classes")
    assert snapshot(tmp_path) == before

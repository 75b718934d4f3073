"""Bad input to `frugal optimize` is one line and exit status 2; a constraint no trial meets names the
closest trials and keeps them."""

import json

import pytest

from frugalml.cli import main
from tests.optimize.conftest import search_recipe

pytest.importorskip("optuna")


def _err(capsys) -> str:
    """The one error line (log lines may precede it when the error comes after some work)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err and err.rstrip().endswith(errors[0]), err
    return errors[0]


@pytest.mark.parametrize("args, says", [
    (["--objective", "speed"], "unknown objective 'speed'"),
    (["--objective", "latency-b32"], "latency-b32 cannot be measured: measure.batch_sizes are [1, 64]"),
    (["--budget", "soon"], "not a duration"),
    (["--set", "search.space.prune.structured.ratoi=0.5"], "search.space.prune.structured.ratoi: unknown key"),
    (["--sampler", "tpe", "--set", "search.trials=null"], "needs an end"),
    (["--max-drop", "0.5", "--select-margin", "0.8"], "select_margin 0.8 exceeds max_drop 0.5"),
])
def test_bad_settings_are_one_line_and_leave_nothing(tmp_path, capsys, args, says):
    out = tmp_path / "opt"
    assert main(["optimize", str(search_recipe(tmp_path)), "--out", str(out), *args]) == 2
    assert says in _err(capsys)
    assert not out.exists()  # settings errors come before any work: no folder


def test_folders_that_are_not_ours_or_not_there(tmp_path, capsys):
    recipe = str(search_recipe(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["optimize", recipe, "--out", str(other)]) == 2
    assert "not a frugal optimize folder" in _err(capsys)
    assert (other / "keep.txt").read_text() == "mine"
    assert main(["optimize", recipe, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in _err(capsys)
    assert main(["optimize", str(tmp_path / "base"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in _err(capsys)


def test_a_budget_too_small_for_one_trial_is_one_line_and_keeps_the_base(tmp_path, capsys):
    out = tmp_path / "opt"
    assert main(["optimize", str(search_recipe(tmp_path)), "--out", str(out), "--budget", "0.01s"]) == 2
    assert "too small for one trial" in _err(capsys)
    assert (out / "base/results.json").is_file()  # what was done is kept: --resume continues from it


def test_an_objective_this_model_cannot_measure(tmp_path, capsys):
    from frugalml.errors import ConfigError
    from frugalml.optimize.config import SearchConfig
    from frugalml.optimize.run import _check_objectives
    from frugalml.recipe import Recipe

    recipe = Recipe.model_validate({"stages": [{"kind": "train"}]})
    with pytest.raises(ConfigError, match="macs cannot be measured for this model"):
        _check_objectives(SearchConfig(objective="macs", trials=1), recipe, {"macs": None})


def test_a_constraint_no_trial_meets_names_the_closest_and_keeps_them(tmp_path, capsys):
    space = {"prune": {"heavy": {"kind": "prune", "method": "structured", "ratio": {"low": 0.8, "high": 0.85, "step": 0.05},
                                 "finetune": {"epochs": 0}}}}
    out = tmp_path / "opt"
    recipe = search_recipe(tmp_path, space=space, trials=2, max_drop=0.0, prune_margin=100.0)
    assert main(["optimize", str(recipe), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "no trial stayed within --max-drop 0.0" in err and "closest: trial" in err
    front = json.loads((out / "front.json").read_text())
    assert front["best"] is None and front["closest"]
    for n in front["closest"]:
        row = next(t for t in front["trials"] if t["number"] == n)
        assert (out / row["run_dir"] / "results.json").is_file()
    assert (out / "closest.yaml").is_file() and not (out / "best.yaml").exists()


def test_select_margin_reaches_the_choice_and_the_early_stop(tmp_path, capsys):
    """Through the command line: max_drop 5 less a margin of 5 leaves 0 points; the pruned trials (drops
    of several points) are stopped early against that limit and none is chosen."""
    space = {"prune": {"heavy": {"kind": "prune", "method": "structured", "ratio": {"low": 0.8, "high": 0.85, "step": 0.05},
                                 "finetune": {"epochs": 0}},
             },
             "quantize": {"int8": {"kind": "quantize", "mode": "dynamic", "backend": "torch",
                                   "references": {"fixed": []}}}}
    out = tmp_path / "opt"
    recipe = search_recipe(tmp_path, space=space, trials=2, max_drop=5.0, prune_margin=0.0)
    assert main(["optimize", str(recipe), "--out", str(out), "--select-margin", "5"]) == 2
    assert "no trial stayed within --max-drop 5.0 less --select-margin 5.0 points (val)" in _err(capsys)
    front = json.loads((out / "front.json").read_text())
    assert front["select_margin"] == 5.0 and front["best"] is None
    assert json.loads((out / "optimize.json").read_text())["select_margin"] == 5.0
    stopped = [t for t in front["trials"] if t["state"] == "stopped early"]
    assert stopped and all(t["stopped_after"] == "prune" and t["drop"] > 0 for t in stopped)

"""`drop_as: constraint`: the sampler minimises the costs alone and sees the accuracy drop only as its
limit; the report's front and the choice are the same as with `drop_as: objective`."""

import json

import pytest

from frugalml.cli import main
from frugalml.errors import ConfigError
from frugalml.optimize.config import SearchConfig
from frugalml.optimize.study import open_study, tell
from tests.optimize.conftest import search_recipe

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize("drop_as, told", [("objective", [0.8, 2.0]), ("constraint", [2.0])])
def test_a_trial_tells_the_drop_only_when_it_is_an_objective(drop_as, told):
    cfg = SearchConfig(max_drop=1.0, select_margin=0.5, trials=1, drop_as=drop_as)
    study = open_study(optuna.storages.InMemoryStorage(), "s", "settings", cfg)
    trial = study.ask()
    tell(study, trial, {"state": "complete", "drop": 0.8, "values": [0.8, 2.0]}, 0.5)
    done = study.get_trials()[0]
    assert done.values == told
    assert done.user_attrs["constraint"] == pytest.approx(0.3)  # infeasible either way: 0.8 > 1.0 - 0.5


def test_joining_a_study_that_minimises_other_values_is_refused():
    storage = optuna.storages.InMemoryStorage()
    cfg = SearchConfig(trials=1)
    open_study(storage, "s", "settings", cfg)
    with pytest.raises(ConfigError, match="minimises 2 values, not 1"):
        open_study(storage, "s", "settings", cfg.model_copy(update={"drop_as": "constraint"}))


def test_a_constrained_search_runs_and_cannot_resume_as_multi_objective(tmp_path, capsys):
    out = tmp_path / "opt"
    recipe = search_recipe(tmp_path, trials=2)
    assert main(["optimize", str(recipe), "--out", str(out), "--drop-as", "constraint"]) == 0
    study = optuna.load_study(study_name="frugal-tiny-search", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.values) == 1 for t in complete)  # latency only
    front = json.loads((out / "front.json").read_text())
    assert front["best"] is not None and all("drop" in t for t in front["trials"] if t["state"] == "complete")
    capsys.readouterr()
    assert main(["optimize", str(recipe), "--out", str(out), "--resume", "--trials", "3"]) == 2
    assert "drop_as" in capsys.readouterr().err

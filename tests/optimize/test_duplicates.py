"""A proposal that repeats a finished pipeline is not run again: the report shows the original's result,
and the sampler is told PRUNED, so repeats do not pile up in TPE's "good" set (told as COMPLETE, each
repeat was one more copy of a good point, and a 1-hour search proposed the same pipeline 20 times)."""

from pathlib import Path

import pytest

from frugalml.optimize.config import SearchConfig, parse_objective
from frugalml.optimize.outputs import summarize
from frugalml.optimize.study import counted, make_sampler, tell, tell_duplicate
from frugalml.optimize.trial import Setup
from frugalml.recipe import Recipe

optuna = pytest.importorskip("optuna")
DIST = {"quantize": optuna.distributions.CategoricalDistribution(["none", "runtime", "int8"])}


def test_a_repeat_is_reported_with_the_original_result_and_ranked_below_every_complete_trial():
    from optuna.samplers._tpe.sampler import _split_trials
    from optuna.trial import TrialState

    cfg = SearchConfig(max_drop=1.0, trials=10)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(cfg, 0))
    outcomes = {"runtime": (0.05, 5.0), "int8": (0.1, 7.0), "none": (0.0, 20.0)}
    for choice, (drop, ms) in outcomes.items():  # three finished pipelines
        study.enqueue_trial({"quantize": choice})
        trial = study.ask(DIST)
        trial.set_user_attr("chain_key", choice)
        tell(study, trial, {"state": "complete", "drop": drop, "values": [drop, ms]}, cfg.max_drop)
    original = next(t for t in study.get_trials() if t.user_attrs.get("chain_key") == "runtime")
    repeats = []
    for _ in range(5):
        study.enqueue_trial({"quantize": "runtime"})
        trial = study.ask(DIST)
        tell_duplicate(study, trial, original, cfg.max_drop)
        repeats.append(trial.number)
    frozen = {t.number: t for t in study.get_trials()}
    for n in repeats:
        t = frozen[n]
        assert t.state == TrialState.PRUNED and t.user_attrs["duplicate_of"] == original.number
        assert t.user_attrs["outcome"] == original.user_attrs["outcome"] and t.user_attrs["constraint"] < 0
        assert not counted(t)
    # TPE's split of the finished trials into "good" (below) and "bad" (above): with room for 3 good
    # ones, the 3 complete trials fill it; the repeats are never counted among the good
    finished = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    below, above = _split_trials(study, finished, 3)
    assert {t.number for t in below} == {t.number for t in finished if t.state == TrialState.COMPLETE}
    assert set(repeats) <= {t.number for t in above}
    # the report: each repeat is a "duplicate" row with the original's costs, never chosen
    setup = Setup(root=Path("."), recipe=Recipe.model_validate({"stages": [{"kind": "train"}]}),
                  base_artifact=Path("base"), base_metrics={"accuracy": 0.93}, view=None,
                  objectives=[parse_objective("latency-b64")], max_drop=1.0, prune_margin=0.5)
    summary = summarize(study, setup, cfg)
    rows = {r["number"]: r for r in summary["trials"]}
    assert all(rows[n]["state"] == "duplicate" and rows[n]["costs"] == {"latency-b64": 5.0} for n in repeats)
    assert summary["best"] == original.number and not set(repeats) & set(summary["front"])

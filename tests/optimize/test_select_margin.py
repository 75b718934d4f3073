"""`select_margin`: the chosen pipeline's val drop stays within max_drop less the margin; the Optuna
constraint steers to the same limit; a margin larger than max_drop is refused."""

from pathlib import Path

import pytest

from frugalml.optimize.config import SearchConfig, parse_objective
from frugalml.optimize.outputs import summarize
from frugalml.optimize.study import tell
from frugalml.optimize.trial import Setup
from frugalml.recipe import Recipe

optuna = pytest.importorskip("optuna")

# (val drop in points, latency-b64 in ms): the fastest is the riskiest
TRIALS = [(0.8, 2.0), (0.3, 3.0), (0.1, 4.0), (1.4, 1.0)]


def _study(limit: float):
    study = optuna.create_study(directions=["minimize", "minimize"])
    for drop, ms in TRIALS:
        trial = study.ask()
        tell(study, trial, {"state": "complete", "drop": drop, "values": [drop, ms]}, limit)
    return study


def _setup(cfg: SearchConfig) -> Setup:
    return Setup(root=Path("."), recipe=Recipe.model_validate({"stages": [{"kind": "train"}]}),
                 base_artifact=Path("base"), base_metrics={"accuracy": 0.93, "latency_ms": {"b64": {"median": 9.0}}},
                 view=None, objectives=[parse_objective("latency-b64")], max_drop=cfg.max_drop,
                 prune_margin=cfg.prune_margin, select_margin=cfg.select_margin)


@pytest.mark.parametrize("margin, best, feasible", [(0.0, 0, [0, 1, 2]), (0.5, 1, [1, 2]), (0.85, 2, [2]),
                                                     (1.0, None, [])])
def test_the_choice_keeps_the_margin(margin, best, feasible):
    cfg = SearchConfig(max_drop=1.0, select_margin=margin, trials=4)
    setup = _setup(cfg)
    assert setup.limit == pytest.approx(1.0 - margin)
    study = _study(setup.limit)
    summary = summarize(study, setup, cfg)
    assert summary["best"] == best
    assert [r["number"] for r in summary["trials"] if r["feasible"]] == feasible
    assert summary["max_drop"] == 1.0 and summary["select_margin"] == margin
    assert summary["base"]["costs"] == {"latency-b64": 9.0}
    if best is None:  # nothing within the limit: the closest are named (the smallest drops first)
        assert summary["closest"] == [2, 1, 0]
    # the constraint Optuna's samplers see is the same limit: feasible <=> constraint <= 0
    for t in study.get_trials():
        assert (t.user_attrs["constraint"] <= 1e-9) == (t.number in feasible)


def test_a_margin_larger_than_max_drop_is_refused():
    with pytest.raises(ValueError, match="select_margin 1.5 exceeds max_drop 1.0"):
        SearchConfig(max_drop=1.0, select_margin=1.5, trials=1)

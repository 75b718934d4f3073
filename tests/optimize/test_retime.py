"""The re-timing before the choice (frugalml.optimize.retime) with stand-in artifacts: who is timed, in
how many rounds, what is left out (models that do not load or do not take the search's input), and
when there is nothing to re-time."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from frugalml.errors import ArtifactError
from frugalml.optimize import retime as rt
from frugalml.optimize.config import SearchConfig, parse_objective
from frugalml.optimize.trial import Setup
from frugalml.recipe import Recipe
from tests.conftest import FAST_MEASURE


class View:
    input_shape = [4]
    num_classes = 3
    task = "classification"
    name = "toy"
    has_targets = True

    def sample_input(self, batch):
        return torch.zeros(batch, 4)

    def check_fits(self, spec, what):
        from frugalml.data.bundle import DataBundle

        DataBundle.check_fits(self, spec, what)  # the real check, on this view's shape


def _artifact(folder: Path, shape=(4,)) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"spec": {"input_shape": list(shape), "num_classes": 3}}))
    return folder


def _results(run: Path, stages: list[tuple[str, float, float]]) -> None:
    """A hand-written run's results.json: (stage, accuracy, b64 median ms)."""
    run.mkdir(parents=True, exist_ok=True)
    for name, *_ in stages:
        _artifact(run / "stages" / name)
    (run / "results.json").write_text(json.dumps({"schema": 1, "stages": [
        {"name": n, "kind": "train", "metrics": {"accuracy": a, "latency_ms": {"b64": {"median": ms}}}}
        for n, a, ms in stages]}))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Three feasible trials (and one over the limit), a base and two hand-written runs; `broken` names
    folders whose models fail to load."""
    broken: set[str] = set()

    def load(directory, trust_code=False):
        if broken & set(Path(directory).parts):
            raise ArtifactError(f"{directory}: corrupt safetensors file")
        if Path(directory).name == "wrong-input":
            return nn.Linear(7, 3)  # loads, but cannot take the search's input
        return nn.Linear(4, 3)

    monkeypatch.setattr("frugalml.artifact.read_info", lambda d: json.loads((Path(d) / "model.json").read_text()))
    monkeypatch.setattr("frugalml.artifact.load", load)
    trials = []
    for n, (drop, ms) in enumerate([(0.2, 3.0), (0.1, 2.0), (0.4, 4.0), (1.5, 1.0)]):
        _artifact(tmp_path / "trials" / f"{n:04d}" / "stages" / "last")
        trials.append({"number": n, "state": "complete", "feasible": drop <= 1.0, "drop": drop,
                       "costs": {"latency-b64": ms}, "run_dir": f"trials/{n:04d}", "stages": [{"name": "last"}]})
    _artifact(tmp_path / "base")
    _results(tmp_path / "hand" / "prune", [("baseline", 0.93, 9.0), ("structured", 0.925, 2.5),
                                           ("wrong-input", 0.93, 1.0), ("far", 0.80, 0.5)])
    _results(tmp_path / "hand" / "quant", [("baseline", 0.93, 9.0), ("int8", 0.929, 3.5), ("fp16", 0.93, 6.0)])
    summary = {"trials": trials, "best": 1, "base": {"costs": {"latency-b64": 9.0}}}
    cfg = SearchConfig(max_drop=1.0, trials=4, retime_top=2, retime_rounds=3,
                       compare=[str(tmp_path / "hand/prune"), str(tmp_path / "hand/quant"), str(tmp_path / "hand/prune")])
    setup = Setup(root=tmp_path, recipe=Recipe.model_validate({"stages": [{"kind": "train"}], "measure": FAST_MEASURE}),
                  base_artifact=tmp_path / "base", base_metrics={"accuracy": 0.93}, view=View(),
                  objectives=[parse_objective("latency-b64")], max_drop=1.0, prune_margin=0.5)
    return tmp_path, summary, setup, cfg, broken


def test_the_cheapest_trials_the_base_and_the_fastest_hand_written_stages_are_timed_in_rounds(world):
    root, summary, setup, cfg, _ = world
    timed = rt.retime(root, summary, setup, cfg)
    keys = [e["key"] for e in timed["entries"]]
    # trials 1 and 0 (the 2 cheapest within the limit; trial 3 is over it), the base, and the 2 fastest
    # hand-written stages within 1 point of their run's first stage that run ("far" is 13 points down; the
    # first stages are what was compressed; wrong-input, the fastest, cannot take the search's input and
    # the next is timed instead; prune named twice: once)
    assert keys == ["trial 1", "trial 0", "base", f"{root}/hand/prune/structured", f"{root}/hand/quant/int8"]
    assert all(len(e["rounds"]) == 3 for e in timed["entries"])
    trials = [e for e in timed["entries"] if e["kind"] == "trial"]
    assert timed["best"] == min(trials, key=lambda e: (e["median"], e["drop"]))["number"]
    assert timed["search_best"] == 1 and timed["rounds"] == 3 and timed["threads"] == 1


def test_entries_that_fail_are_left_out_and_without_a_trial_the_search_timings_stand(world, caplog):
    root, summary, setup, cfg, broken = world
    broken.add("int8")
    keys = [e["key"] for e in rt.retime(root, summary, setup, cfg)["entries"]]
    assert keys[-2:] == [f"{root}/hand/prune/structured", f"{root}/hand/quant/fp16"]  # the next fastest instead
    assert "int8 left out" in caplog.text and "corrupt safetensors" in caplog.text
    assert "wrong-input left out: does not run on the search's input (RuntimeError" in caplog.text
    broken.add("0001")
    assert [e["key"] for e in rt.retime(root, summary, setup, cfg)["entries"]][:2] == ["trial 0", "trial 2"]
    broken.add("last")  # every trial's artifact
    assert rt.retime(root, summary, setup, cfg) is None


def test_nothing_is_re_timed_for_other_objectives_or_zero_rounds(world):
    root, summary, setup, cfg, _ = world
    assert rt.retime(root, summary, setup, cfg.model_copy(update={"retime_rounds": 0})) is None
    setup.objectives = [parse_objective("size")]
    assert rt.retime(root, summary, setup, cfg) is None


def test_a_stage_for_other_data_is_left_out_in_one_line(world, caplog):
    root, summary, setup, cfg, _ = world
    e = rt.Entry("hand/prune/wrong-input", "hand-written", root / "hand/prune/stages/wrong-input", 1.0)
    with pytest.raises(Exception, match="does not run on the search's input"):
        rt._runner(e, setup, torch.zeros(2, 4))
    other = rt.Entry("other", "hand-written", _artifact(root / "other", shape=(1, 28, 28)), 1.0)
    with pytest.raises(Exception, match=r"takes input \[1, 28, 28\]"):
        rt._runner(other, setup, torch.zeros(2, 4))

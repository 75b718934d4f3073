"""One tiny search on digits (4 trials), then what it left on disk: run folders, front, best.yaml that
`frugal run` reproduces, the report, the cache, and no test data in any choice."""

import json

import pytest
import yaml

from frugalml.cli import main
from tests.optimize.conftest import search_recipe

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    out = tmp / "opt"
    # its first trial's run folder doubles as a "hand-written" run to compare with (read at the end), twice
    # (the same run named twice is timed once); the base run has no stage after its first
    trial0 = str(out / "trials" / "0000")
    code = main(["optimize", str(search_recipe(tmp)), "--out", str(out), "--trials", "4",
                 "--compare", trial0, trial0, str(out / "base")])
    assert code == 0
    return out, json.loads((out / "front.json").read_text())


def test_every_trial_is_a_run_folder_and_the_front_is_consistent(search):
    out, front = search
    assert front["schema"] == 1 and front["split"] == "val" and front["objectives"] == ["latency-b64"]
    run = [t for t in front["trials"] if t["state"] in ("complete", "stopped early")]
    assert len(run) == 4
    assert len({t["run_dir"] for t in run}) == 4
    for t in run:
        res = json.loads((out / t["run_dir"] / "results.json").read_text())
        assert res["stages"][0]["name"] == "base"
        chain = [s["name"] for s in t["chain"]]
        if t["state"] == "stopped early":  # hopeless after an early stage: the rest was not run
            chain = chain[: chain.index(t["stopped_after"]) + 1]
        assert [s["name"] for s in res["stages"][1:]] == chain
        assert (out / t["run_dir"] / "report.html").is_file()
    done = {t["number"]: t for t in run if t["state"] == "complete"}
    assert front["best"] in done and set(front["front"]) <= set(done)
    best = done[front["best"]]
    assert best["feasible"] and best["drop"] <= front["max_drop"]
    assert front["retimed"]["search_best"] in done  # the cheapest on the search's own timings ...
    cheaper = [t for t in done.values() if t["feasible"]
               and t["costs"]["latency-b64"] < done[front["retimed"]["search_best"]]["costs"]["latency-b64"]]
    assert not cheaper
    for f in ("best.yaml", "report.md", "report.html", "trials-latency-b64.png", "space.yaml", "optimize.json"):
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "chosen pipeline" in md and "Pareto front" in md and "validation split only" in md


def test_trials_measure_on_val_and_test_is_read_once_at_the_end(search):
    out, front = search
    digits_val = json.loads((out / "base/results.json").read_text())["data"]
    assert digits_val["test"] == digits_val["val"]  # the search's view: its "test" split is val
    first = next(t for t in front["trials"] if t["state"] == "complete")
    res = json.loads((out / first["run_dir"] / "results.json").read_text())
    assert res["data"]["test"] == res["data"]["val"]
    final = front["final"]
    assert final["split"] == "test" and str(front["best"]) in final["trials"]
    assert set(final["trials"]) >= {str(n) for n in front["front"]}


def test_stages_shared_by_trials_are_computed_once(search):
    out, front = search
    cached = [p for p in (out / "cache").iterdir() if not p.name.startswith(".")]
    assert cached
    runs = [t for t in front["trials"] if t["state"] == "complete"]
    seconds = {json.loads((out / t["run_dir"] / "stages/base/metrics.json").read_text())["stage_seconds"] for t in runs}
    assert len(seconds) == 1  # the base stage was loaded and measured once, then reused by every trial


def test_best_yaml_reproduces_the_best_trial(search, tmp_path):
    out, front = search
    best = next(t for t in front["trials"] if t["number"] == front["best"])
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert [s["name"] for s in recipe["stages"]] == ["base", *[s["name"] for s in best["chain"]]]
    assert main(["run", str(out / "best.yaml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again/results.json").read_text())["stages"][-1]["metrics"]
    trial = json.loads((out / best["run_dir"] / "results.json").read_text())["stages"][-1]["metrics"]
    test_quality = front["final"]["trials"][str(best["number"])]["quality"]
    assert again["accuracy"] == pytest.approx(test_quality, abs=1e-9)  # same weights, same test split
    assert again["params"] == trial["params"] and again["macs"] == trial["macs"]
    assert again["size_bytes"] == pytest.approx(trial["size_bytes"], rel=0.02)
    assert again["runtime"] == trial["runtime"]


def test_latency_candidates_are_re_timed_in_alternation_and_the_choice_is_made_on_those(search):
    out, front = search
    timed = front["retimed"]
    assert timed["objective"] == "latency-b64" and timed["rounds"] == 3
    feasible = sorted((t for t in front["trials"] if t["feasible"]),
                      key=lambda t: (t["costs"]["latency-b64"], t["drop"], t["number"]))
    trials = [e for e in timed["entries"] if e["kind"] == "trial"]
    assert [e["number"] for e in trials] == [t["number"] for t in feasible[:4]]  # retime_top cheapest
    kinds = [e["kind"] for e in timed["entries"]]
    assert kinds.count("base") == 1 and kinds.count("hand-written") == 1  # trial 0's last stage, once
    hand = next(e for e in timed["entries"] if e["kind"] == "hand-written")
    assert hand["key"].endswith("trials/0000/" + front["trials"][0]["chain"][-1]["name"])
    for e in timed["entries"]:
        assert len(e["rounds"]) == 3 and all(m > 0 for m in e["rounds"])
        assert e["median"] == sorted(e["rounds"])[1]
    chosen = min(trials, key=lambda e: (e["median"], e["drop"], e["number"]))
    assert front["best"] == timed["best"] == chosen["number"]
    header = (out / "best.yaml").read_text().split("kind:")[0]
    assert f"trial {front['best']} " in header and f"re-timed in 3 rounds alternating with {len(kinds) - 1} others" in header
    md = (out / "report.md").read_text()
    assert "re-timed back to back" in md and "| hand-written |" in md and "re-timed: latency-b64" in md


def test_resuming_a_finished_search_with_a_larger_cap_adds_trials_only(search, tmp_path):
    out, front = search
    before = {t["number"]: t for t in front["trials"] if t["state"] in ("complete", "stopped early")}
    assert main(["optimize", str(search_recipe(tmp_path)), "--out", str(out), "--trials", "5", "--resume"]) == 0
    after = json.loads((out / "front.json").read_text())
    now = {t["number"]: t for t in after["trials"] if t["state"] in ("complete", "stopped early")}
    assert len(now) == 5
    for n, t in before.items():
        assert now[n]["drop"] == t["drop"] and now[n]["run_dir"] == t["run_dir"]


def test_a_different_space_on_resume_is_refused(search, tmp_path, capsys):
    out, _ = search
    recipe = search_recipe(tmp_path, space={"prune": {"none": {}}})
    assert main(["optimize", str(recipe), "--out", str(out), "--resume", "--trials", "9"]) == 2
    assert "another recipe, space, objectives" in capsys.readouterr().err


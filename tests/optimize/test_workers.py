"""A search killed between trials resumes without losing or repeating a trial; two worker processes on
one journal storage share the trials of one study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frugalml.cli import main
from tests.optimize.conftest import search_recipe

pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "frugalml.cli", "optimize", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(front: dict) -> dict[int, dict]:
    return {t["number"]: t for t in front["trials"] if t["state"] in ("complete", "stopped early")}


def _front(out: Path) -> dict:
    try:
        return json.loads((out / "front.json").read_text())
    except (OSError, ValueError):
        return {"trials": []}


def test_killed_search_resumes_with_no_trial_lost_or_repeated(tmp_path):
    out = tmp_path / "opt"
    recipe = search_recipe(tmp_path)
    proc = _cli(str(recipe), "--out", str(out), "--trials", "4")
    deadline = time.monotonic() + 240
    while not _finished(_front(out)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a power cut would
    proc.wait()
    before = _finished(_front(out))
    assert before

    assert main(["optimize", str(recipe), "--out", str(out), "--trials", "4", "--resume"]) == 0
    after = json.loads((out / "front.json").read_text())
    done = _finished(after)
    assert len(done) == 4  # the cap counts the trials finished before the kill
    for n, t in before.items():  # nothing finished was lost or run again
        assert done[n]["drop"] == t["drop"] and done[n]["run_dir"] == t["run_dir"]
    assert len({t["run_dir"] for t in done.values()}) == 4
    keys = [t["pipeline"] for t in done.values()]
    assert len(keys) == len(set(keys))  # a pipeline is run once; repeats are marked duplicate_of instead
    interrupted = [t for t in after["trials"] if t["state"] == "interrupted"]
    assert len(interrupted) <= 1
    for t in interrupted:  # the trial the kill cut short was tried again
        assert any(r.get("retry_of") == t["number"] for r in after["trials"])


def test_two_workers_share_one_journal_study(tmp_path):
    out = tmp_path / "opt"
    recipe = search_recipe(tmp_path)
    journal = f"journal:{tmp_path / 'study.journal'}"
    procs = [_cli(str(recipe), "--out", str(out), "--trials", "4", "--storage", journal) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    front = json.loads((out / "front.json").read_text())
    done = _finished(front)
    assert len(done) == 4 and len({t["run_dir"] for t in done.values()}) == 4
    assert len({t["worker"] for t in done.values()}) == 2  # both processes ran trials
    pipelines = [t["pipeline"] for t in done.values()]
    assert len(pipelines) == len(set(pipelines))
    assert (out / "best.yaml").is_file() and not (out / "study.db").exists()


def test_trials_of_a_dead_worker_are_failed_and_enqueued_again():
    import optuna

    from frugalml.optimize.study import HOST, counted, recover_stale

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = optuna.create_study(directions=["minimize", "minimize"])
    mine = study.ask()
    mine.suggest_categorical("prune", ["none", "structured"])
    mine.set_user_attr("worker", f"{HOST}:{os.getpid()}")  # alive: left alone
    dead = study.ask()
    dead.suggest_categorical("prune", ["none", "structured"])
    dead.set_user_attr("worker", f"{HOST}:{gone.stdout.strip()}")
    recover_stale(study)
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[mine.number] == "RUNNING" and states[dead.number] == "FAIL"
    retry = study.get_trials()[-1]
    assert retry.state.name == "WAITING" and retry.user_attrs["retry_of"] == dead.number
    assert not counted(study.get_trials()[dead.number])  # an interrupted trial does not use up --trials


def test_a_trial_waits_for_an_earlier_one_still_choosing_its_pipeline():
    """The race behind two workers running one pipeline: worker A has asked for trial 0 but not yet
    named its pipeline when worker B's trial 1 looks for a running twin; B must wait until A's trial
    has a pipeline (here: the same one) and then until it finishes."""
    import threading

    import optuna

    from frugalml.optimize.study import _wait_for_twin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    first = study.ask()
    second = study.ask()
    second.set_user_attr("chain_key", "k")
    events = []

    def worker_a():
        time.sleep(0.3)  # still sampling when B checks
        first.set_user_attr("chain_key", "k")
        time.sleep(0.5)  # running the pipeline
        events.append("a finished")
        study.tell(first, 1.0)

    thread = threading.Thread(target=worker_a)
    thread.start()
    _wait_for_twin(study, second.number, "k")
    events.append("b went on")
    thread.join()
    assert events == ["a finished", "b went on"]

"""The Optuna side: storage, sampler, and one worker's ask -> run -> tell loop.

Several workers (processes or machines) join one study through Optuna's own storages: an SQLite file
in the search folder by default, a journal file on a shared folder (`--storage journal:PATH`), or an
RDB URL (`--storage postgresql://...`). Optuna hands out trial numbers atomically, so each trial's run
folder belongs to one worker. Trials of a killed worker (same host and a dead process, or no
heartbeat for STALE_SECONDS) are failed and their parameters enqueued again; their finished stages are
already in the stage cache, so the retry costs what was lost, not the whole trial.

Objectives: [accuracy drop in points (val), *costs], all minimised; the constraint drop <= max_drop -
select_margin (the limit a chosen pipeline must meet) is given to the sampler (infeasible trials are modelled as such by TPE and NSGA-II). Trials stopped early
(hopeless) are told as PRUNED with their constraint; duplicates of a finished pipeline are not run
again: they are marked `duplicate_of` (the report shows the original's result) and told as PRUNED, so
the sampler does not count a repeat as one more good point (`tell_duplicate`).
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frugalml.errors import ConfigError, FrugalError, UnsupportedError
from frugalml.optimize import cache
from frugalml.optimize.config import SETTINGS_COVER, SearchConfig
from frugalml.optimize.space import sample_chain
from frugalml.optimize.trial import Setup, run_trial, trial_recipe

log = logging.getLogger("frugalml")
HOST = socket.gethostname()
HEARTBEAT_SECONDS = 60
STALE_SECONDS = 600  # a RUNNING trial without a heartbeat for this long belongs to a dead worker
MAX_DUPLICATES = 25  # this many duplicates in a row: the space is exhausted
SAMPLING_WAIT = 10.0  # seconds a trial waits for an earlier one still being sampled to name its pipeline


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise UnsupportedError("frugal optimize needs Optuna: pip install 'frugalml[search]' (or optuna>=4)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # frugalml logs each trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_for(url: str | None, root: Path) -> Any:
    """An Optuna storage: RDB for URLs (SQLite in the search folder by default), else a journal file."""
    optuna = optuna_module()
    if url is None:
        url = f"sqlite:///{(root / 'study.db').resolve()}"
    if "://" in url:
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as e:
            raise ConfigError(f"--storage {url}: the database driver is not installed ({e})") from None
        except Exception as e:  # sqlalchemy's errors: unreachable server, bad credentials, ...
            raise ConfigError(f"--storage {url}: cannot open the study storage ({str(e).splitlines()[0]})") from None
    path = Path(url.removeprefix("journal:"))
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {url}: folder {path.parent} does not exist (a journal file lives on a "
                          "folder every worker can reach)")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _constraint(frozen: Any) -> tuple[float]:  # optuna 4: constraints come from the sampler's callback
    return (float(frozen.user_attrs.get("constraint", 0.0)),)


def make_sampler(cfg: SearchConfig, seed: int) -> Any:
    optuna = optuna_module()
    kw = {} if hasattr(optuna.trial.Trial, "set_constraint") else {"constraints_func": _constraint}
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.startup_trials, seed=seed, **kw)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials, multivariate=True,
                                      group=True, constant_liar=True, **kw)


def open_study(storage: Any, name: str, settings: str, cfg: SearchConfig) -> Any:
    """Create the study, or join it: its objectives and settings must be the ones of this search. A trial
    tells the drop and the costs, or only the costs with `drop_as: constraint`."""
    optuna = optuna_module()
    values = len(cfg.objectives()) + (cfg.drop_as == "objective")
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize"] * values,
                                sampler=make_sampler(cfg, cfg.seed), load_if_exists=True)
    if len(study.directions) != values:
        raise ConfigError(f"study {name!r} in this storage minimises {len(study.directions)} values, not "
                          f"{values} (other objectives or drop_as): use another --storage or --out")
    known = study.user_attrs.get("settings")
    if known is None:
        study.set_user_attr("settings", settings)
    elif known != settings:
        raise ConfigError(f"study {name!r} was started with another {SETTINGS_COVER}: resume with "
                          "the same ones, or use another --out/--storage")
    return study


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(study: Any) -> None:
    """Fail the RUNNING trials of dead workers and enqueue their parameters again."""
    from optuna.trial import TrialState

    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        started = t.datetime_start.timestamp() if t.datetime_start else now
        beat = float(t.user_attrs.get("heartbeat", started))
        dead = host == HOST and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
        if not (dead or now - beat > STALE_SECONDS):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:  # another worker failed it first
            continue
        log.info("trial %d was interrupted (worker %s gone): trying its pipeline again", t.number, host or "?")
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def counted(t: Any) -> bool:
    """Trials that count towards --trials: run or running, not duplicates, not interrupted."""
    a = t.user_attrs
    if "duplicate_of" in a or "surplus" in a:
        return False
    return t.state.name in ("COMPLETE", "PRUNED", "RUNNING") or (t.state.name == "FAIL" and "error" in a)


class Heartbeat:
    """Records `heartbeat` on the trial every HEARTBEAT_SECONDS while it runs."""

    def __init__(self, trial: Any) -> None:
        self.trial, self.stop = trial, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # a storage hiccup must not kill the trial; the next beat retries
                log.debug("heartbeat failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def tell(study: Any, trial: Any, outcome: dict, limit: float) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("outcome", outcome)
    if outcome["state"] == "failed":
        trial.set_user_attr("error", outcome.get("error", "?"))
        study.tell(trial, state=TrialState.FAIL)
        return
    _constrain(trial, float(outcome["drop"]), limit)
    if outcome["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:  # values = [drop, *costs]; a study with one value fewer keeps the drop as a constraint only
        values = outcome["values"]
        study.tell(trial, values[len(values) - len(study.directions):])


def tell_duplicate(study: Any, trial: Any, original: Any, limit: float) -> None:
    """A proposal repeating a finished pipeline: the report shows the original's result for it, but the
    sampler is told PRUNED (with the original's constraint), not COMPLETE with the same values. TPE
    ranks pruned trials without intermediate values after every complete one, so a repeat never joins
    its "good" set; told as COMPLETE, every repeat added one more copy of a good point and TPE proposed
    it again — 30 of the 48 proposals of a 1-hour Fashion-MNIST search repeated three pipelines."""
    from optuna.trial import TrialState

    outcome = original.user_attrs["outcome"]
    trial.set_user_attr("duplicate_of", original.number)
    trial.set_user_attr("outcome", outcome)
    if outcome.get("drop") is not None:
        _constrain(trial, float(outcome["drop"]), limit)
    study.tell(trial, state=TrialState.PRUNED)


def _constrain(trial: Any, drop: float, limit: float) -> None:
    """The constraint the samplers see (feasible when <= 0), kept as a user attribute too."""
    trial.set_user_attr("constraint", drop - limit)
    if hasattr(trial, "set_constraint"):
        trial.set_constraint("max_drop", drop - limit)


def _duplicate_of(study: Any, number: int, key: str) -> Any:
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if t.number != number and a.get("chain_key") == key and "duplicate_of" not in a and \
                t.state.name in ("COMPLETE", "PRUNED") and "outcome" in a:
            return t
    return None


def _wait_for_twin(study: Any, number: int, key: str) -> None:
    """Another worker's earlier trial running the same pipeline: wait for its result instead of
    computing it twice (only the later trial waits, so two twins never wait for each other).
    An earlier running trial that has no pipeline yet is still being sampled (milliseconds): it is
    waited for too, up to SAMPLING_WAIT seconds, or both workers could start the same pipeline."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + SAMPLING_WAIT
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < number]
        if any(t.user_attrs.get("chain_key") == key for t in earlier):
            time.sleep(1.0)
            recover_stale(study)
        elif time.monotonic() < deadline and any("chain_key" not in t.user_attrs for t in earlier):
            time.sleep(0.05)
        else:
            return


class Clock:
    def __init__(self, budget: float | None, start: float) -> None:
        self.budget, self.start = budget, start

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.elapsed()


def stop_reason(study: Any, cfg: SearchConfig, clock: Clock) -> str | None:
    trials = study.get_trials(deepcopy=False)
    if cfg.trials is not None and sum(counted(t) for t in trials) >= cfg.trials:
        return f"{cfg.trials} trials reached"
    took = [float(t.user_attrs["outcome"].get("seconds", 0)) for t in trials
            if "outcome" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    expected = statistics.median(took) if took else 0.0
    if clock.left() <= 0 or (took and clock.left() < expected):
        return f"budget used (a trial takes ~{expected:.0f} s here, {max(clock.left(), 0):.0f} s left)"
    return None


def work(setup: Setup, study: Any, cfg: SearchConfig, clock: Clock, after_trial: Callable[[], None]) -> tuple[str, int]:
    """This worker's loop; returns (why it stopped, trials it ran)."""
    from optuna.trial import TrialState

    me, ran, duplicates = f"{HOST}:{os.getpid()}", 0, 0
    while True:
        recover_stale(study)
        reason = stop_reason(study, cfg, clock)
        if reason:
            return reason, ran
        trial = study.ask()
        if cfg.trials is not None and sum(counted(t) for t in study.get_trials(deepcopy=False)
                                          if t.number < trial.number) >= cfg.trials:
            trial.set_user_attr("surplus", True)  # another worker took the last one meanwhile
            study.tell(trial, state=TrialState.FAIL)
            return f"{cfg.trials} trials reached", ran
        trial.set_user_attr("worker", me)
        try:
            chain = sample_chain(trial, setup.space)
            key = cache.chain_keys(trial_recipe(setup, chain, "key"))[-1]
        except FrugalError as e:  # a combination of options that does not validate: a failed trial
            tell(study, trial, {"state": "failed", "error": str(e), "seconds": 0.0}, setup.limit)
            continue
        for k, v in (("heartbeat", time.time()), ("chain", chain), ("chain_key", key)):
            trial.set_user_attr(k, v)
        with Heartbeat(trial):
            _wait_for_twin(study, trial.number, key)
        original = _duplicate_of(study, trial.number, key)
        if original is not None:
            duplicates += 1
            tell_duplicate(study, trial, original, setup.limit)
            if duplicates >= MAX_DUPLICATES:
                return f"{duplicates} proposals in a row repeated finished trials (the space looks exhausted)", ran
            continue
        duplicates = 0
        log.info("trial %d: %s", trial.number, " -> ".join(describe(s) for s in chain) or "the base model as it is")
        try:
            with Heartbeat(trial):
                outcome = run_trial(setup, trial.number, chain)
        except BaseException:  # interrupted (Ctrl-C, a kill the process saw): retried on --resume
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        tell(study, trial, outcome, setup.limit)
        if outcome["state"] == "complete":
            costs = ", ".join(f"{o.name} {o.fmt(v)}" for o, v in zip(setup.objectives, outcome["values"][1:]))
            log.info("trial %d: val drop %.2f points, %s (%.0f s)", trial.number, outcome["drop"], costs,
                     outcome["seconds"])
        ran += 1
        after_trial()


def describe(stage: dict) -> str:
    """`prune(structured, macs_budget=0.5, ...)`: a stage dict in one short line."""
    parts = [f"{k}={v}" for k, v in stage.items() if k not in ("kind", "name", "method", "mode", "references")]
    head = stage.get("method") or stage.get("mode")
    return f"{stage['kind']}({', '.join(([head] if head else []) + parts)})"

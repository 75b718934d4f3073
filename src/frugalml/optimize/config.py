"""The `search:` section of an optimize recipe: what to minimise, within which accuracy drop, for how long.

Objectives are read from the metrics every stage already has (`frugalml.measure`); nothing is estimated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from frugalml.config import Config
from frugalml.errors import ConfigError

OBJECTIVE_HELP = "latency-b<N> (median ms at batch N, e.g. latency-b64), size, size-zstd, macs, params, energy"
_UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Objective:
    """One cost to minimise, read from a stage's metrics."""

    name: str

    @property
    def batch(self) -> int | None:
        m = re.fullmatch(r"latency-b(\d+)", self.name)
        return int(m.group(1)) if m else None

    @property
    def unit(self) -> str:
        return {"size": "bytes", "size-zstd": "bytes", "macs": "MACs", "params": "nonzero params",
                "energy": "mJ/sample (estimated)"}.get(self.name, "ms")

    def value(self, metrics: dict) -> float | None:
        if self.batch is not None:
            v = ((metrics.get("latency_ms") or {}).get(f"b{self.batch}") or {}).get("median")
        elif self.name == "energy":
            v = (metrics.get("energy_mj_per_sample") or {}).get("value")
        else:
            key = {"size": "size_bytes", "size-zstd": "compressed_bytes", "macs": "macs",
                   "params": "nonzero_params"}[self.name]
            v = metrics.get(key)
        return float(v) if v is not None else None

    def fmt(self, v: float | None) -> str:
        if v is None:
            return "–"
        if self.batch is not None:
            return f"{v:.3f} ms"
        if self.name in ("size", "size-zstd"):
            return f"{v / 1024:.1f} KiB"
        if self.name == "energy":
            return f"{v:.3f} mJ"
        return f"{v:.3g}"


def parse_objective(text: str) -> Objective:
    if re.fullmatch(r"latency-b[1-9]\d*", text) or text in ("size", "size-zstd", "macs", "params", "energy"):
        return Objective(text)
    raise ValueError(f"unknown objective {text!r}; allowed: {OBJECTIVE_HELP}")


def parse_duration(text: str | float | int) -> float:
    """Seconds from `90s`, `30m`, `1h`, `1h30m` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", str(text).strip().lower())
        joined = "".join(f"{n}{u}" for n, u in parts)
        if not parts or joined != re.sub(r"\s+", "", str(text).strip().lower()):
            raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 30m, 1h or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a budget must be positive")
    return seconds


# What a search folder's and a study's `settings` hash covers: a resume or a joining worker must match it.
SETTINGS_COVER = "recipe, space, objectives, max_drop, select_margin or drop_as"


class SearchConfig(Config):
    """How `frugal optimize` searches. Every key can also be given on the command line or with --set."""

    objective: str = Field("latency-b64", description=OBJECTIVE_HELP)
    also: list[str] = Field(default_factory=list, description="further objectives, minimised too (multi-objective)")
    max_drop: float = Field(1.0, ge=0, description="allowed accuracy drop vs the base model, in points (val split)")
    select_margin: float = Field(0.0, ge=0, description="points held back when choosing: the chosen pipeline's val "
                                 "drop is at most max_drop - select_margin (the search steers there too). Val "
                                 "drops of retrained pipelines under-estimate their test drops: the cheapest of "
                                 "many trials is the luckiest estimate, and a val split drawn from the training "
                                 "pool is easier than a separate test set (BENCHMARKS.md measures both)")
    drop_as: Literal["objective", "constraint"] = Field(
        "objective", description="how the accuracy drop enters the sampler: `objective`, minimised with the "
        "costs (multi-objective: the sampler explores the whole accuracy-vs-cost front); `constraint`, only "
        "its limit (max_drop - select_margin): the sampler minimises the costs among the pipelines within it, "
        "so its model of good trials holds the cheapest feasible ones rather than the low-drop, expensive "
        "ones. The report's front is drawn from every trial's drop and costs either way")
    budget: str | float | None = Field(None, description="wall-clock budget of this command: 90s, 30m, 1h")
    trials: int | None = Field(None, ge=1, description="stop once the study has this many trials (all workers)")
    sampler: Literal["tpe", "nsga2"] = "tpe"
    seed: int = 0
    startup_trials: int = Field(6, ge=2, description="TPE: random trials before it models the space; "
                                "NSGA-II: its population size")
    prune_margin: float = Field(0.5, ge=0, description="a trial stops after an early stage whose drop already "
                                "exceeds max_drop - select_margin by this many points (later stages rarely win "
                                "accuracy back)")
    retime_top: int = Field(4, ge=1, description="latency objectives: the cheapest pipelines within the limit "
                            "that are timed again when the search ends, in alternation with the base model and "
                            "the fastest hand-written stages of `compare`; the choice is made on those timings")
    retime_rounds: int = Field(3, ge=0, description="rounds of that re-timing (each times every candidate once); "
                               "0: choose on the timings taken during the search")
    base: str | None = Field(None, description="the recipe stage whose model is searched from (default: the last)")
    default_space: bool = Field(True, description="start from the default space for this model and objectives "
                                "(`space` then narrows or widens it); false: `space` alone")
    space: dict[str, Any] = Field(default_factory=dict, description="steps -> options -> stage templates, "
                                  "see frugalml.optimize.space")
    initial: list[dict[str, Any]] | None = Field(None, description="parameter sets tried first (default: a "
                                                 "few obvious pipelines for the objectives)")
    compare: list[str] = Field(default_factory=list, description="run folders of hand-written recipes whose "
                               "stages the report compares the chosen pipeline with")

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        parse_objective(v)
        return v

    @field_validator("also")
    @classmethod
    def _also(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for name in v:
            parse_objective(name)
        return [n for n in dict.fromkeys(v) if n != info.data.get("objective")]

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _an_end(self) -> SearchConfig:
        if self.select_margin > self.max_drop:
            raise ValueError(f"select_margin {self.select_margin} exceeds max_drop {self.max_drop}: no pipeline "
                             "could be chosen; give a margin of at most max_drop")
        if self.budget is None and self.trials is None:
            raise ValueError("a search needs an end: give --budget (e.g. 1h) or --trials N (or both)")
        return self

    def objectives(self) -> list[Objective]:
        return [parse_objective(n) for n in [self.objective, *self.also]]

    def budget_seconds(self) -> float | None:
        return parse_duration(self.budget) if self.budget is not None else None


def search_config(raw: Any, overrides: dict[str, Any]) -> SearchConfig:
    """The recipe's `search:` mapping with the command line's values on top; one ConfigError line."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("search: expected a mapping (objective, max_drop, budget, space, ...)")
    merged = {**(raw or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return SearchConfig.checked("search", merged)

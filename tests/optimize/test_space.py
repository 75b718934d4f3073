"""The search space, the search config and the small pieces around them (no trials run here)."""

import pytest

from frugalml.errors import ConfigError
from frugalml.optimize.config import SearchConfig, parse_duration, search_config
from frugalml.optimize.space import Corner, check_space, initial_params, merge_space, parameters, sample_chain
from frugalml.optimize.trial import pins
from tests.optimize.conftest import SPACE


class Recorder(Corner):
    """Corner that also records every parameter asked for."""

    def __init__(self, high: bool) -> None:
        super().__init__(high)
        self.asked: list[str] = []

    def suggest_categorical(self, name, choices):
        self.asked.append(name)
        return super().suggest_categorical(name, choices)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.asked.append(name)
        return super().suggest_int(name, low, high, step=step, log=log)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.asked.append(name)
        return super().suggest_float(name, low, high, step=step, log=log)


def test_chain_follows_the_picked_options_only():
    low, high = Recorder(False), Recorder(True)
    assert sample_chain(low, SPACE) == []  # `none` everywhere: the base model as it is
    chain = sample_chain(high, SPACE)
    assert [s["name"] for s in chain] == ["prune", "quantize"]
    assert chain[0]["macs_budget"] == 0.8 and chain[0]["finetune"] == {"epochs": 2, "lr": 0.02}
    assert chain[1]["references"] == []  # {fixed: []}
    assert "prune.structured.macs_budget" in high.asked and "prune.structured.macs_budget" not in low.asked


def test_choose_int_ranges_and_fixed_values():
    space = {"lowrank": {"svd": {"kind": "lowrank", "ratio": {"low": 0.2, "high": 0.6, "step": 0.2},
                                 "epochs": {"low": 1, "high": 4},
                                 "distill": {"choose": {"none": None, "kd": {"temperature": {"low": 2.0, "high": 4.0}}}}}}}
    hi = sample_chain(Corner(True), space)[0]
    assert hi["epochs"] == 4 and isinstance(hi["epochs"], int) and hi["distill"] == {"temperature": 4.0}
    lo = sample_chain(Corner(False), space)[0]
    assert lo["distill"] is None and lo["ratio"] == 0.2
    params = parameters(space)
    assert params["lowrank.svd.distill"] == ["none", "kd"] and "lowrank.svd.distill.kd.temperature" in params
    check_space(space)


def test_merge_narrows_widens_and_removes():
    merged = merge_space(SPACE, {"prune": {"structured": {"macs_budget": {"low": 0.6}}, "none": None},
                                 "quantize": {"int8": {"calibration_batches": [1, 2]}}})
    assert merged["prune"]["structured"]["macs_budget"] == {"low": 0.6, "high": 0.8, "step": 0.2}
    assert "none" not in merged["prune"] and merged["quantize"]["int8"]["calibration_batches"] == [1, 2]
    assert "quantize" not in merge_space(SPACE, {"quantize": None})
    assert SPACE["prune"]["structured"]["macs_budget"]["low"] == 0.4  # not modified in place


@pytest.mark.parametrize("space, says", [
    ({"prune": {"s": {"kind": "prune", "method": "structured", "ratoi": 0.5}}}, "search.space.prune.s.ratoi: unknown key"),
    ({"prune": {"s": {"kind": "prune", "method": "structured", "ratio": {"low": 0.5, "high": 1.5}}}},
     "search.space.prune.s.ratio"),
    ({"prune": {"s": {"kind": "prune", "method": "nope"}}}, "search.space.prune.s.method: unknown method"),
    ({"prune": {"s": {"method": "structured"}}}, "with a `kind`"),
    ({"prune": {"s": {"kind": "prune", "method": "structured", "ratio": 0.5, "name": "x"}}}, "set by the search"),
    ({"bad/step": {"none": {}}}, "not a valid name"),
    ({"q": {"x": {"kind": "quantize", "qat": [{"epochs": 1}, {"epochs": 2}]}}}, "choose"),
    ({"p": {"s": {"kind": "prune", "method": "structured", "ratio": {"low": 0.9, "high": 0.1}}}}, "above high"),
    ({}, "no steps"),
])
def test_bad_spaces_are_one_line(space, says):
    import re

    with pytest.raises(ConfigError) as e:
        check_space(space)
    assert re.search(says, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_initial_params_keep_what_the_space_admits():
    wanted = [{"quantize": "int8"}, {"prune": "structured", "prune.structured.macs_budget": 0.5},
              {"prune": "structured", "prune.structured.macs_budget": 0.6}, {"quantize": "runtime"}]
    got = initial_params(SPACE, wanted)
    assert got == [{"prune": "none", "quantize": "int8"},
                   {"quantize": "none", "prune": "structured"},  # 0.5 is off the grid: left to the sampler
                   {"quantize": "none", "prune": "structured", "prune.structured.macs_budget": 0.6}]


def test_search_config_values_and_errors():
    cfg = search_config({"objective": "size", "also": ["size", "latency-b1"], "budget": "1h30m"}, {"max_drop": 0.5})
    assert [o.name for o in cfg.objectives()] == ["size", "latency-b1"]
    assert cfg.budget_seconds() == 5400 and cfg.max_drop == 0.5
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration(45) == 45
    for bad, says in [({"objective": "speed", "trials": 2}, "unknown objective 'speed'"),
                      ({"budget": "soon"}, "not a duration"), ({}, "needs an end"),
                      ({"trials": 0}, "search.trials"), ({"trials": 2, "max_drop": -1}, "search.max_drop")]:
        with pytest.raises(ConfigError, match=says):
            search_config(bad, {})
    assert SearchConfig(trials=1).objectives()[0].value({"latency_ms": {"b64": {"median": 2.5}}}) == 2.5


def test_pins_write_down_what_auto_chose():
    results = {"stages": [
        {"name": "quantize", "kind": "quantize", "config": {"backend": "auto"},
         "metrics": {"candidates": [{"backend": "pt2e", "chosen": False}, {"backend": "torch", "chosen": True}]}},
        {"name": "q2", "kind": "quantize", "config": {"backend": "torch"},
         "metrics": {"candidates": [{"backend": "torch", "chosen": True}]}},
        {"name": "runtime", "kind": "runtime", "config": {},
         "metrics": {"runtime_candidates": [{"candidate": "eager"}, {"candidate": "onnxruntime", "chosen": True}]}},
    ]}
    assert pins(results) == {"quantize": {"backend": "torch"}, "runtime": {"candidates": ["onnxruntime"]}}

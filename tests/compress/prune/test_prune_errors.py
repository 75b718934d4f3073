"""Bad input gives one clear FrugalError naming the key or layer (or, for a config object built in
Python, a pydantic ValidationError naming the field)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from frugalml.compress.prune import NMPrune, StructuredPrune, UnstructuredPrune, prune, run_prune_stage
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError, FrugalError, UnsupportedError
from frugalml.models import build_model
from frugalml.stages import StageContext


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (UnstructuredPrune, {"ratio": 1.0}, "less than 1"),
        (UnstructuredPrune, {"ratio": -0.1}, "greater than or equal to 0"),
        (UnstructuredPrune, {}, r"ratio\n  Field required"),
        (UnstructuredPrune, {"ratio": 0.5, "macs_budget": 0.5}, r"macs_budget\n  Extra inputs"),
        (UnstructuredPrune, {"ratio": 0.5, "schedule": "gradual"}, "finetune.epochs"),
        (UnstructuredPrune, {"ratio": 0.5, "colour": "red"}, "colour"),
        (UnstructuredPrune, {"ratio": 0.5, "finetune": {"epochs": 1, "lr": 0.1, "wd": 1}}, "wd"),
        (UnstructuredPrune, {"ratio": 0.5, "finetune": {"overrides": {"optimizer": "lbfgs"}}}, "'sgd' or 'adamw'"),
        (StructuredPrune, {}, "exactly one of ratio, macs_budget, latency_budget_ms"),
        (StructuredPrune, {"ratio": 0.5, "macs_budget": 0.5}, "got ratio, macs_budget"),
        (StructuredPrune, {"macs_budget": 1.5}, "less than 1"),
        (StructuredPrune, {"macs_budget": 0.5, "per_layer": "sensitivity"}, "needs `ratio`"),
        (StructuredPrune, {"ratio": 0.5, "importance": "fisher"}, "'l1'"),
        (StructuredPrune, {"ratio": 0.5, "storage": "sparse"}, r"storage\n  Extra inputs"),
        (NMPrune, {"n": 4, "m": 4}, "n < m"),
        (NMPrune, {"ratio": 0.5}, r"ratio\n  Extra inputs"),
    ],
)
def test_config_validation(cls, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cfg, message", [
    ({"method": "channels"}, r"^prune.method: unknown method 'channels'; allowed: unstructured, structured, nm$"),
    ({"method": "structured"}, r"^prune: structured pruning needs exactly one of"),
    ({"ratio": 0.5, "finetune": {"overrides": {"optimizer": "lbfgs"}}}, r"^prune.finetune.overrides.optimizer: "),
    ("structured", r"^prune: expected a pruning config .* got str$"),
])
def test_mappings_are_checked_like_recipes(cfg, message, zoo, data):
    with pytest.raises(ConfigError, match=message):
        prune(zoo("cnn"), cfg, data)


@pytest.mark.parametrize("cfg", [
    StructuredPrune(ratio=0.5, ignore=["conv7"]),
    StructuredPrune(ratio=0.5, targets=["conv7"]),
    UnstructuredPrune(ratio=0.5, ignore=["conv7"]),
    NMPrune(targets=["conv7"]),
])
def test_unknown_layer_names_list_valid_ones(cfg, zoo, data):
    key = "ignore" if cfg.ignore else "targets"
    with pytest.raises(ConfigError, match=rf"prune.{key}: .*'conv7'.*valid layers: features.0.0, features.1.0, fc"):
        prune(zoo("cnn", channels=[8, 16]), cfg, data)


def test_ratio_that_would_empty_a_layer_names_it(zoo, data):
    with pytest.raises(ConfigError, match=r"every one of the 4 channels of layer 'features.0.0'"):
        prune(zoo("cnn", channels=[4, 32]), StructuredPrune(ratio=0.85, max_layer_ratio=0.85), data)


def test_unreachable_macs_budget(zoo, data):
    with pytest.raises(ConfigError, match=r"macs_budget=0.01 is out of reach.*max_layer_ratio=0.5"):
        prune(zoo("cnn"), StructuredPrune(macs_budget=0.01, max_layer_ratio=0.5), data)


def test_merged_training_config_that_does_not_validate_names_the_stage(zoo, data):
    # each value is valid alone; together the warm-up outlasts the fine-tuning
    cfg = UnstructuredPrune(ratio=0.5, finetune={"epochs": 1, "overrides": {"warmup_epochs": 3}})
    with pytest.raises(ConfigError, match=r"^prune.finetune.*warmup_epochs .*longer than epochs"):
        prune(zoo("cnn"), cfg, data)


def test_nm_without_divisible_layers():
    model = build_model("mlp", (1, 3, 3), 4, hidden=[5])  # 9 and 5 inputs: no 4-groups
    y = torch.arange(8) % 4
    tiny = DataBundle("t", torch.randn(8, 1, 3, 3), y, torch.randn(4, 1, 3, 3), y[:4], torch.randn(4, 1, 3, 3), y[:4], 4)
    with pytest.raises(UnsupportedError, match="divisible by m=4"):
        prune(model, NMPrune(), tiny)


def test_stage_without_a_model(data, tmp_path):
    ctx = StageContext(data=data, model_spec={}, stage_dir=tmp_path)
    with pytest.raises(FrugalError, match="needs a model"):
        run_prune_stage(None, UnstructuredPrune(ratio=0.5), ctx)

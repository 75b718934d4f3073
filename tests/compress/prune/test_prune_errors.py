"""Bad input gives one clear FrugalError (or a pydantic validation error for the config itself)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from frugalml.compress.prune import PruneStage, prune, run_prune_stage
from frugalml.data import DataConfig, load_data
from frugalml.errors import ConfigError, FrugalError, UnsupportedError
from frugalml.models import build_model
from frugalml.stages import StageContext

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=48, synthetic_classes=4, synthetic_shape=(1, 16, 16)))


def _cnn(data, channels=(8, 16)):
    torch.manual_seed(0)
    return build_model("cnn", data.input_shape, data.num_classes, channels=list(channels)).eval()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 1.0}, "less than 1"),
        ({"ratio": -0.1}, "greater than or equal to 0"),
        ({"method": "channels", "ratio": 0.5}, "unstructured"),
        ({"method": "unstructured"}, "needs `ratio`"),
        ({"method": "structured"}, "exactly one of ratio, macs_budget, latency_budget_ms"),
        ({"method": "structured", "ratio": 0.5, "macs_budget": 0.5}, "got ratio, macs_budget"),
        ({"method": "unstructured", "ratio": 0.5, "macs_budget": 0.5}, "only apply to method: structured"),
        ({"method": "structured", "macs_budget": 1.5}, "less than 1"),
        ({"ratio": 0.5, "schedule": "gradual"}, "finetune.epochs"),
        ({"method": "nm", "n": 4, "m": 4}, "n < m"),
        ({"method": "structured", "ratio": 0.5, "storage": "sparse"}, "use dense"),
        ({"method": "structured", "macs_budget": 0.5, "per_layer": "sensitivity"}, "needs `ratio`"),
        ({"ratio": 0.5, "importance": "fisher"}, "l1"),
        ({"ratio": 0.5, "finetune": {"epochs": 1, "lr": 0.1, "wd": 1}}, "wd"),
        ({"ratio": 0.5, "colour": "red"}, "colour"),
        ({"ratio": 0.5, "finetune": {"overrides": {"learning_rate": 1}}}, "learning_rate.*allowed: epochs"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        PruneStage(**kwargs)


def test_unknown_layer_names_list_valid_ones(data):
    for key, method in (("ignore", "structured"), ("targets", "structured"), ("ignore", "unstructured"),
                        ("targets", "nm")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"prune.{key}: .*'conv7'.*valid layers: features.0.0, features.1.0, fc"):
            prune(_cnn(data), PruneStage(method=method, ratio=0.5, **{key: ["conv7"]}), data)


def test_ratio_that_would_empty_a_layer_names_it(data):
    with pytest.raises(ConfigError, match=r"every one of the 4 channels of layer 'features.0.0'"):
        prune(_cnn(data, (4, 32)), PruneStage(method="structured", ratio=0.85, max_layer_ratio=0.85), data)


def test_unreachable_macs_budget(data):
    with pytest.raises(ConfigError, match=r"macs_budget=0.01 is out of reach.*max_layer_ratio=0.5"):
        prune(_cnn(data), PruneStage(method="structured", macs_budget=0.01, max_layer_ratio=0.5), data)


def test_bad_finetune_override_is_a_config_error(data):
    cfg = PruneStage(ratio=0.5, finetune={"epochs": 1, "overrides": {"optimizer": "lbfgs"}})
    with pytest.raises(ConfigError, match="prune.finetune: optimizer"):
        prune(_cnn(data), cfg, data)


def test_nm_without_divisible_layers(data):
    model = build_model("mlp", (1, 3, 3), data.num_classes, hidden=[5])  # 9 and 5 inputs: no 4-groups
    from frugalml.data.bundle import DataBundle

    tiny = DataBundle("t", torch.randn(8, 1, 3, 3), torch.arange(8) % 4, torch.randn(4, 1, 3, 3),
                      torch.arange(4) % 4, torch.randn(4, 1, 3, 3), torch.arange(4) % 4, 4)  # fmt: skip
    with pytest.raises(UnsupportedError, match="divisible by m=4"):
        prune(model, PruneStage(method="nm"), tiny)


def test_stage_without_a_model(data, tmp_path):
    ctx = StageContext(data=data, model_spec={}, stage_dir=tmp_path)
    with pytest.raises(FrugalError, match="needs a model"):
        run_prune_stage(None, PruneStage(ratio=0.5), ctx)

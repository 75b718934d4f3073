"""Recipe loading: valid recipes map onto configs; bad ones give one line naming file, key, allowed values."""

import pytest
import yaml

from frugalml.errors import ConfigError
from frugalml.recipe import apply_overrides, default_recipe_text, load_recipe, load_recipe_text
from tests.conftest import tiny_recipe


def _load(raw: dict, overrides=None):
    return load_recipe_text(yaml.safe_dump(raw), "r.yaml", overrides)


def test_default_recipe_is_valid_and_uses_digits():
    recipe, source = load_recipe(None)
    assert source == "default"
    assert recipe.data.name == "digits"
    assert recipe.stages[0].kind == "train"
    assert "digits" in default_recipe_text()


def test_stage_names_default_to_kind_and_are_unique():
    raw = tiny_recipe(stages=[{"kind": "train"}, {"kind": "train", "init": "parent"}])
    r = _load(raw)
    assert [s.name for s in r.stages] == ["train", "train-2"]


def test_unknown_key_names_file_key_and_allowed_keys():
    raw = tiny_recipe()
    raw["train"]["epochz"] = 3
    with pytest.raises(ConfigError) as e:
        _load(raw)
    msg = str(e.value)
    assert msg.startswith("r.yaml: train.epochz:")
    assert "epochs" in msg and "lr" in msg


def test_wrong_literal_lists_allowed_values():
    raw = tiny_recipe()
    raw["train"]["optimizer"] = "adam"
    with pytest.raises(ConfigError) as e:
        _load(raw)
    assert "train.optimizer" in str(e.value) and "sgd" in str(e.value) and "adamw" in str(e.value)


def test_unknown_stage_kind_lists_kinds():
    raw = tiny_recipe(stages=[{"kind": "train"}, {"kind": "squash"}])
    with pytest.raises(ConfigError) as e:
        _load(raw)
    assert "stages.1" in str(e.value) and "'squash'" in str(e.value) and "train" in str(e.value)


def test_unknown_key_inside_stage_names_stage_path():
    raw = tiny_recipe(stages=[{"kind": "train", "epochz": 1}])
    with pytest.raises(ConfigError) as e:
        _load(raw)
    msg = str(e.value)
    assert "stages.0.epochz" in msg and "epochs" in msg


def test_parent_must_be_an_earlier_stage():
    raw = tiny_recipe(stages=[{"kind": "train", "name": "a"}, {"kind": "train", "parent": "zzz"}])
    with pytest.raises(ConfigError, match="stages.1.parent.*'zzz'.*allowed: a"):
        _load(raw)


def test_first_stage_must_make_a_model():
    with pytest.raises(ConfigError, match="stages.0.kind: the first stage must make a model"):
        _load(tiny_recipe(stages=[{"kind": "quantize"}]))


def test_bad_yaml_and_non_mapping(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_recipe(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(p)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_set_overrides_values_and_list_items():
    r = _load(tiny_recipe(), ["train.epochs=5", "stages.0.name=base", "data.name=digits"])
    assert r.train.epochs == 5 and r.stages[0].name == "base" and r.data.name == "digits"


def test_set_override_errors():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"stages": [{}]}, ["stages.3.ratio=1"])
    with pytest.raises(ConfigError, match="train.epochs: Input should be"):
        _load(tiny_recipe(), ["train.epochs=many"])

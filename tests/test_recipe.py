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


def test_the_resolved_recipe_a_run_writes_runs_the_same_stages():
    """recipe.yaml in a run folder is the resolved recipe: loading it back must give every stage the
    same training settings. A stage's `train:` overrides mean "keep the recipe's value" where unset
    and "clear" for an explicit `augment: null`, so a dump must not spell unset keys as null (which
    made `epochs: null` fail and `augment: null` silently drop the recipe's augmentation)."""
    from frugalml.recipe import dump_recipe
    from frugalml.train import merge_train

    raw = tiny_recipe()
    raw["train"]["augment"] = {"hflip": True}
    raw["stages"] = [{"kind": "train", "name": "base"},
                     {"kind": "train", "name": "tuned", "parent": "base", "init": "parent", "train": {"lr": 0.01}},
                     {"kind": "train", "name": "plain", "parent": "base", "init": "parent",
                      "train": {"augment": None}}]
    original = load_recipe_text(yaml.safe_dump(raw), "tiny.yaml")
    again = load_recipe_text(dump_recipe(original), "recipe.yaml")
    for a, b in zip(original.stages, again.stages):
        assert merge_train(original.train, a.train) == merge_train(again.train, b.train), a.name
    assert merge_train(again.train, again.stages[1].train).augment is not None  # inherited, not cleared
    assert merge_train(again.train, again.stages[2].train).augment is None  # cleared on purpose, still cleared

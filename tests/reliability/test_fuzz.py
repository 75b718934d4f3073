"""Property-based fuzzing (Hypothesis): whatever bytes or structures come in, the recipe loader and
the JSON readers either load or raise frugalml's own error type — never anything else."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugalml.errors import FrugalError
from frugalml.recipe import load_recipe_text
from frugalml.schemas import CheckpointState, ModelInfo, Results, RunState, StageMetrics, read_json
from tests.conftest import tiny_recipe

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), c, max_size=4)),
                           max_leaves=20)
KEYS = ["name", "seed", "data", "model", "train", "measure", "stages", "kind", "method", "mode", "ratio",
        "epochs", "lr", "parent", "path", "extends", "finetune", "overrides", "backend", "batch_sizes"]
recipe_like = st.recursive(
    scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(KEYS), c, max_size=5)),
    max_leaves=25,
)


def check_loads_or_frugal_error(text: str) -> None:
    try:
        load_recipe_text(text, "fuzz.yaml")
    except FrugalError as e:
        assert str(e).startswith("fuzz.yaml"), str(e)


@SETTINGS
@given(st.text(max_size=300))
def test_recipe_loader_on_any_text(text):
    check_loads_or_frugal_error(text)


@SETTINGS
@given(recipe_like)
def test_recipe_loader_on_recipe_shaped_structures(raw):
    check_loads_or_frugal_error(yaml.safe_dump(raw))


@SETTINGS
@given(st.sampled_from(["data", "model", "train", "measure", "stages", "name", "seed"]), json_values)
def test_recipe_loader_with_one_section_replaced(key, value):
    raw = tiny_recipe()
    raw[key] = value
    check_loads_or_frugal_error(yaml.safe_dump(raw))


SCHEMAS = [ModelInfo, RunState, StageMetrics, Results, CheckpointState]


@SETTINGS
@given(st.sampled_from(SCHEMAS), st.one_of(json_values, st.binary(max_size=64)))
def test_json_readers_on_anything(tmp_path_factory, schema, value):
    path = tmp_path_factory.mktemp("fuzz") / "file.json"
    path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    try:
        out = read_json(path, schema)
    except FrugalError as e:
        assert str(e).startswith(str(path)), str(e)
    else:
        assert isinstance(out, dict)


@SETTINGS
@given(json_values)
def test_model_json_reader_through_artifact_load(tmp_path_factory, value):
    import frugalml

    d = tmp_path_factory.mktemp("art")
    (d / "model.json").write_text(json.dumps(value))
    with pytest.raises(FrugalError):  # there are no weights, so it can never load: but it must say so
        frugalml.load(d)

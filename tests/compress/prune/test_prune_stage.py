"""The `prune` stage: one config class per method behind one kind, the handler's metrics and
artifact format, and recipes (YAML `kind: prune, method: ...`) mapping onto the classes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch

import frugalml
from frugalml import artifact, recipe
from frugalml.compress.prune import (
    MaskPruneConfig,
    NMPrune,
    PruneConfig,
    StructuredPrune,
    UnstructuredPrune,
    api,
    prune_methods,
    register_method,
    run_prune_stage,
)
from frugalml.errors import ConfigError
from frugalml.stages import StageContext, handler_for, stage_kinds, stage_union
from frugalml.train import TrainConfig

ROOT = Path(__file__).resolve().parents[3]
RECIPE = """
data: synthetic
model: {name: cnn, kwargs: {channels: [8, 16]}}
stages:
  - {kind: train, name: base}
  - {kind: prune, name: p, %s}
"""


@pytest.fixture
def ctx(data, spec, tmp_path):
    return StageContext(data=data, model_spec=spec("cnn", channels=[8, 16]), stage_dir=tmp_path,
                        train_defaults=TrainConfig(batch_size=16))


def test_one_kind_one_handler_three_methods():
    kind = stage_kinds()["prune"]
    assert kind.config is PruneConfig and kind.variant_key == "method"
    assert kind.variants == {"unstructured": UnstructuredPrune, "structured": StructuredPrune, "nm": NMPrune}
    assert prune_methods() == kind.variants
    for cfg in (UnstructuredPrune(ratio=0.5), StructuredPrune(ratio=0.5), NMPrune()):
        assert handler_for(cfg) is run_prune_stage
    assert frugalml.StructuredPrune is StructuredPrune and frugalml.NMPrune is NMPrune


def test_unstructured_stage_asks_for_sparse_storage(data, zoo, ctx, tmp_path):
    cfg = UnstructuredPrune(ratio=0.9, finetune={"epochs": 1, "lr": 0.01})
    out = run_prune_stage(zoo("cnn", channels=[8, 16]), cfg, ctx)
    assert ctx.extra_metrics["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert ctx.extra_metrics["method"] == "unstructured"
    assert ctx.extra_metrics["pruning"]["storage"] == "torch-packed"
    assert ctx.artifact_meta["format"] == "torch-packed"
    assert (tmp_path / "work" / "finetune").is_dir()  # fine-tuning checkpoints stay in the stage dir
    # what the pipeline does with it
    artifact.save_any(out, tmp_path / "art", ctx.model_spec, ctx.artifact_meta)
    loaded = artifact.load(tmp_path / "art")
    x = data.sample_input(3)
    assert torch.equal(loaded(x), out(x))
    assert artifact.read_info(tmp_path / "art")["pruning"]["method"] == "unstructured"


def test_dense_storage_is_honoured(zoo, ctx):
    ctx.artifact_meta["format"] = "torch-packed"  # inherited from a sparse parent: must be dropped
    run_prune_stage(zoo("cnn", channels=[8, 16]), UnstructuredPrune(ratio=0.5, storage="dense"), ctx)
    assert "format" not in ctx.artifact_meta and ctx.extra_metrics["pruning"]["storage"] == "torch-fp32"


def test_structured_stage_stays_dense_and_reports_channels(zoo, ctx, tmp_path):
    ctx.artifact_meta["format"] = "torch-packed"
    out = run_prune_stage(zoo("cnn", channels=[8, 16]), StructuredPrune(ratio=0.5), ctx)
    assert "format" not in ctx.artifact_meta
    pruning = ctx.extra_metrics["pruning"]
    assert pruning["pruned_channels"]["features.0.0"] == [8, 4]
    assert pruning["macs_after"] < pruning["macs_before"]
    assert pruning["left_unpruned"] == {"fc": "the classifier: its outputs are the class scores"}
    assert 0 < ctx.extra_metrics["sparsity"] < 1
    artifact.save_any(out, tmp_path / "art", ctx.model_spec, ctx.artifact_meta)
    assert artifact.load(tmp_path / "art").fc.in_features == 8


def test_nm_stage_notes_cpu_runtimes(zoo, ctx):
    run_prune_stage(zoo("cnn", channels=[8, 16]), NMPrune(), ctx)
    assert "CPU" in ctx.extra_metrics["pruning"]["latency_note"]
    assert ctx.artifact_meta["format"] == "torch-packed"


@pytest.mark.parametrize("keys, cls", [
    ("ratio: 0.5", UnstructuredPrune),  # no method: unstructured, as before
    ("method: unstructured, ratio: 0.5, schedule: gradual, finetune: {epochs: 2}", UnstructuredPrune),
    ("method: structured, macs_budget: 0.5, round_to: 4", StructuredPrune),
    ("method: nm, n: 1, m: 4, storage: dense", NMPrune),
])
def test_recipe_stage_maps_to_its_method_class(keys, cls):
    stage = recipe.load_recipe_text(RECIPE % keys, "r.yaml").stages[1]
    assert type(stage) is cls


@pytest.mark.parametrize("keys, message", [
    ("method: channels, ratio: 0.5", r"stages.1.method: unknown method 'channels'; allowed: unstructured, structured, nm"),
    ("method: nm, ratio: 0.5", r"stages.1.ratio: unknown key; allowed keys here: .*\bm\b.*\bn\b"),
    ("method: structured, ratio: 0.5, storage: sparse", r"stages.1.storage: unknown key"),
    ("ratio: 0.5, finetune: {overrides: {optimizer: lbfgs}}", r"stages.1.finetune.overrides.optimizer: .*'sgd' or 'adamw'"),
    ("ratio: 0.5, finetune: {overrides: {learning_rate: 1}}", r"stages.1.finetune.overrides.learning_rate: unknown key"),
    ("ratio: 0.5, finetune: {overrides: {epochs: 3}}", r"set finetune.epochs instead"),
])
def test_recipe_errors_are_one_line(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        recipe.load_recipe_text(RECIPE % keys, "r.yaml")
    assert "\n" not in str(err.value)


def test_shipped_recipes_validate():
    loaded, _ = recipe.load_recipe(ROOT / "recipes" / "fashion-mnist-prune.yaml")
    assert [type(s) for s in loaded.stages if s.kind == "prune"] == [StructuredPrune, UnstructuredPrune, NMPrune]
    default, _ = recipe.load_recipe(None)
    assert any(isinstance(s, StructuredPrune) for s in default.stages)


def test_the_verb_takes_a_config_or_a_mapping(data, zoo):
    model = zoo("cnn", channels=[8, 16])
    a = frugalml.prune(model, StructuredPrune(ratio=0.5), data)
    b = frugalml.prune(model, {"method": "structured", "ratio": 0.5}, data)
    assert a.fc.in_features == b.fc.in_features == 8
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = frugalml.prune(model, {"ratio": 0.5}, data)  # no method: unstructured
    weights = [p for p in c.parameters() if p.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert c.fc.in_features == 16 and zeros == pytest.approx(0.5, abs=0.01)


class HalfRows(MaskPruneConfig):
    """A method defined outside the package: zero the first half of every Linear's rows."""

    method: Literal["half-rows"] = "half-rows"


def _half_rows(model, cfg, inputs):
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m in linears:
            m.weight[: m.out_features // 2] = 0
    return model, {"sparsity": 0.5, "layers": len(linears)}


@pytest.fixture
def half_rows():
    register_method(HalfRows)(_half_rows)
    yield HalfRows
    stage_kinds()["prune"].variants.pop("half-rows")  # leave the registry as the other tests expect
    api._METHODS.pop(HalfRows)
    stage_union.cache_clear()


def test_a_new_method_is_a_config_class_and_one_registration(half_rows, data, zoo, ctx):
    model = zoo("mlp")
    assert prune_methods()["half-rows"] is half_rows
    out = frugalml.prune(model, {"method": "half-rows"}, data)
    assert (out.get_submodule("5").weight[:2] == 0).all()
    run_prune_stage(model, half_rows(name="hr"), ctx)  # the stage handler needs nothing more
    assert ctx.extra_metrics["pruning"]["layers"] == 3 and ctx.artifact_meta["format"] == "torch-packed"

"""The `prune` stage handler: metrics and artifact format it hands to the pipeline, and the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from frugalml import artifact
from frugalml.compress.prune import PruneStage, run_prune_stage
from frugalml.data import DataConfig, load_data
from frugalml.models import build_model
from frugalml.stages import StageContext, handler_for, stage_kinds
from frugalml.train import TrainConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=64, synthetic_classes=4, synthetic_shape=(1, 16, 16)))


def _ctx(data, tmp_path):
    torch.manual_seed(0)
    spec = {"name": "cnn", "kwargs": {"channels": [8, 16]}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}  # fmt: skip
    model = build_model("cnn", data.input_shape, data.num_classes, channels=[8, 16]).eval()
    ctx = StageContext(data=data, model_spec=spec, stage_dir=tmp_path, train_defaults=TrainConfig(batch_size=16))
    return model, ctx


def test_registered_under_its_kind():
    assert "prune" in stage_kinds()
    assert handler_for(PruneStage(ratio=0.5)) is run_prune_stage


def test_unstructured_stage_asks_for_sparse_storage(data, tmp_path):
    model, ctx = _ctx(data, tmp_path)
    cfg = PruneStage(method="unstructured", ratio=0.9, finetune={"epochs": 1, "lr": 0.01})
    out = run_prune_stage(model, cfg, ctx)
    assert ctx.extra_metrics["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert ctx.extra_metrics["method"] == "unstructured"
    assert ctx.extra_metrics["pruning"]["storage"] == "torch-sparse"
    assert ctx.artifact_meta["format"] == "torch-sparse"
    assert (tmp_path / "work" / "finetune").is_dir()  # fine-tuning checkpoints stay in the stage dir
    # what the pipeline does with it
    artifact.save_any(out, tmp_path / "art", ctx.model_spec, ctx.artifact_meta)
    loaded = artifact.load(tmp_path / "art")
    x = data.sample_input(3)
    assert torch.equal(loaded(x), out(x))
    assert artifact.read_info(tmp_path / "art")["pruning"]["method"] == "unstructured"


def test_structured_stage_stays_dense_and_reports_channels(data, tmp_path):
    model, ctx = _ctx(data, tmp_path)
    ctx.artifact_meta["format"] = "torch-sparse"  # inherited from a sparse parent: must be dropped
    out = run_prune_stage(model, PruneStage(method="structured", ratio=0.5), ctx)
    assert "format" not in ctx.artifact_meta
    pruning = ctx.extra_metrics["pruning"]
    assert pruning["pruned_channels"]["features.0.0"] == [8, 4]
    assert pruning["macs_after"] < pruning["macs_before"]
    assert 0 < ctx.extra_metrics["sparsity"] < 1
    artifact.save_any(out, tmp_path / "art", ctx.model_spec, ctx.artifact_meta)
    assert artifact.load(tmp_path / "art").fc.in_features == 8


def test_nm_stage_notes_cpu_runtimes(data, tmp_path):
    model, ctx = _ctx(data, tmp_path)
    run_prune_stage(model, PruneStage(method="nm"), ctx)
    assert "CPU" in ctx.extra_metrics["pruning"]["latency_note"]
    assert ctx.artifact_meta["format"] == "torch-sparse"


def test_fashion_mnist_recipe_validates():
    from frugalml import recipe

    loaded, _ = recipe.load_recipe(ROOT / "recipes" / "fashion-mnist-prune.yaml")
    kinds = [(s.kind, getattr(s, "method", None)) for s in loaded.stages]
    assert kinds[0] == ("train", None)
    assert ("prune", "structured") in kinds and ("prune", "unstructured") in kinds

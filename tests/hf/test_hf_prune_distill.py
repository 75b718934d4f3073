"""Structured pruning of attention heads and FFN neurons, layer dropping, and the whole chain as a
recipe on a tiny BERT and a text file."""

from __future__ import annotations

import copy
import json

import torch
import torch.nn.functional as F

from frugalml import artifact
from frugalml.compress.prune import StructuredPrune, prune_with_metrics


def test_head_and_ffn_pruning_keeps_the_model_runnable_and_heads_consistent(encoder, bound, tmp_path):
    pruned, metrics = prune_with_metrics(encoder, StructuredPrune(ratio=0.25), bound)
    assert pruned.heads() == [3, 3]  # 4 heads -> 3 in each layer
    for layer in pruned.backbone.encoder.layer:
        att = layer.attention.self
        assert att.query.out_features == att.key.out_features == att.value.out_features == att.all_head_size
        assert att.all_head_size == att.num_attention_heads * att.attention_head_size == 24
        assert layer.attention.output.dense.in_features == 24
        assert layer.intermediate.dense.out_features == 48 == layer.output.dense.in_features  # FFN 64 -> 48
        assert layer.output.dense.out_features == 32  # the residual width is kept
    x = bound.x_test[:5]
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (5, 32) and metrics["mac_reduction"] > 1.1
    artifact.save(pruned, tmp_path / "p", encoder.frugal_spec)
    loaded = artifact.load(tmp_path / "p", trust_code=True)
    assert loaded.heads() == [3, 3]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out)


def test_recipe_chain_reports_cosine_and_recall(bert_dir, corpus, tmp_path):
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import Recipe

    recipe = Recipe.model_validate({
        "name": "tiny-bert",
        "data": {"name": f"text:{corpus}", "tokenizer": f"hf:{bert_dir}", "max_length": 16},
        "model": f"hf:{bert_dir}",
        "train": {"epochs": 1, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
        "measure": {"batch_sizes": [4], "warmup_iters": 1, "warmup_seconds": 0, "iters": 2, "min_seconds": 0,
                    "threads": 1, "references": ["onnxruntime"], "roofline": False},
        "stages": [
            {"kind": "train", "name": "teacher", "epochs": 0},
            {"kind": "quantize", "name": "int8", "mode": "dynamic", "backend": "onnxruntime", "references": []},
            {"kind": "prune", "name": "pruned", "parent": "teacher", "method": "structured", "ratio": 0.25,
             "finetune": {"epochs": 1, "distill": 1.0}},
            {"kind": "distill", "name": "student", "parent": "teacher", "teacher": "teacher", "layers": 1},
            {"kind": "quantize", "name": "student-int8", "mode": "dynamic", "backend": "onnxruntime",
             "references": []},
        ],
    })
    results = run_recipe(recipe, tmp_path / "run", trust_code=True)
    by = {s["name"]: s["metrics"] for s in results["stages"]}
    assert results["data"]["task"] == "embedding" and results["data"]["num_classes"] == 32
    assert by["teacher"]["quality_metric"] == "cosine" and by["teacher"]["cosine"] > 0.999
    assert by["teacher"]["recall_at_10"] == 1.0 and by["teacher"]["accuracy"] is None
    # embeddings included; the int8 weights are < 1/3.5 of the float ones, the graph adds ~45 kB on this tiny model
    assert by["int8"]["cosine"] > 0.95 and by["int8"]["size_bytes"] < by["teacher"]["size_bytes"] / 2.5
    assert by["pruned"]["pruning"]["steps"][0]["finetune"]["objective"] == "1 - cosine"
    assert by["student"]["training"]["epochs"] == 1 and by["student"]["training"]["objective"] == "1 - cosine"
    spec = json.loads((tmp_path / "run" / "stages" / "student" / "model.json").read_text())["spec"]
    assert spec["kwargs"]["config"]["num_hidden_layers"] == 1
    student = artifact.load(tmp_path / "run" / "stages" / "student", trust_code=True)
    assert len(student.backbone.encoder.layer) == 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "cosine" in report


def test_layer_dropping_initialises_from_the_teacher(encoder, bound):
    from frugalml.compress.distill.targets import even_layers
    from frugalml.hf.model import drop_layers

    assert even_layers(6, 3) == [0, 2, 4] and even_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    student = drop_layers(copy.deepcopy(encoder), [1])
    w = student.backbone.encoder.layer[0].attention.self.query.weight
    assert torch.equal(w, encoder.backbone.encoder.layer[1].attention.self.query.weight)
    with torch.no_grad():
        assert F.cosine_similarity(student(bound.x_test[:4]), encoder(bound.x_test[:4])).shape == (4,)


def test_training_on_embeddings_reports_no_train_accuracy(encoder, bound):
    """The argmax of embedding targets is no class: the history has no accuracy to show, only the task's."""
    from frugalml.compress.distill.targets import train_on_targets
    from frugalml.train import TrainConfig

    student = copy.deepcopy(encoder)
    _, report = train_on_targets(student, encoder, bound, TrainConfig(epochs=1, batch_size=16, lr=1e-4, seed=0))
    (row,) = report["history"]
    assert row["train_accuracy"] is None and row["val_cosine"] > 0.9


def test_taylor_importance_on_the_reference_model_itself_is_refused(encoder, bound):
    """The embedding task's targets are the first model's own outputs: its loss (1 - cosine) and every
    gradient are 0 there, so Taylor scores would all be 0 and the pruned heads arbitrary. Said in one line."""
    import pytest

    from frugalml.errors import ConfigError

    with pytest.raises(ConfigError, match="taylor needs a loss with a gradient"):
        prune_with_metrics(copy.deepcopy(encoder), StructuredPrune(ratio=0.25, importance="taylor"), bound)


LAYERS = [f"backbone.encoder.layer.{i}.output" for i in range(2)]


def _hidden_mse(model, teacher, x, layers=LAYERS, teacher_layers=LAYERS):
    """Mean squared distance of each named layer's output to the teacher's, over real tokens."""
    from frugalml.compress.distill.targets import HiddenMatch

    term = HiddenMatch(model, teacher, [(s, t, 1.0) for s, t in zip(layers, teacher_layers)], "test")
    try:
        with torch.no_grad():
            out = model(x)
            return float(term(model, x, None, out))
    finally:
        term.close()


def test_hidden_state_hints_pull_a_pruned_encoders_layers_toward_the_unpruned_one(encoder, bound):
    """finetune.hints (embedding task): the pruned model's layer outputs end closer to the unpruned
    model's than with the pooled-cosine objective alone, from the same pruned start."""
    ft = {"epochs": 3, "lr": 1e-3, "distill": 1.0}
    plain, _ = prune_with_metrics(copy.deepcopy(encoder), StructuredPrune(ratio=0.25, finetune=ft), bound)
    hinted, metrics = prune_with_metrics(
        copy.deepcopy(encoder),
        StructuredPrune(ratio=0.25, finetune={**ft, "hints": [{"student": n, "teacher": n} for n in LAYERS]}), bound)
    x = bound.x_test[:16]
    mse_plain, mse_hinted = _hidden_mse(plain, encoder, x), _hidden_mse(hinted, encoder, x)
    assert mse_hinted < 0.8 * mse_plain, (mse_plain, mse_hinted)
    assert metrics["steps"][0]["finetune"]["objective"] == "1 - cosine + hidden-state MSE"
    # the hooks are gone: nothing is captured by a later forward
    assert not any(m._forward_hooks for m in hinted.modules()) and not any(m._forward_hooks for m in encoder.modules())


def test_hidden_state_hints_on_a_layer_dropped_student(encoder, bound):
    """distill stage `hints` on an embedding task: the 1-layer student's layer ends closer to the teacher's
    last layer than the same student distilled on the pooled cosine alone."""
    from frugalml.compress.distill import DistillStage, distill_with_metrics
    from frugalml.hf.model import drop_layers

    x = bound.x_test[:16]
    hints = [{"student": LAYERS[0], "teacher": LAYERS[1], "weight": 1000.0}]  # this random model's MSEs are ~5e-3
    train = {"lr": 1e-3, "optimizer": "adamw", "seed": 0}
    plain, _ = distill_with_metrics(drop_layers(copy.deepcopy(encoder), [1]), encoder,
                                    DistillStage(teacher="teacher", epochs=2, train=train), bound, progress=False)
    hinted, metrics = distill_with_metrics(drop_layers(copy.deepcopy(encoder), [1]), encoder,
                                           DistillStage(teacher="teacher", hints=hints, epochs=2, train=train), bound,
                                           progress=False)
    assert metrics["loss"] == "1 - cosine + hidden-state MSE" and metrics["hints"][0]["weight"] == 1000.0
    mse_plain = _hidden_mse(plain, encoder, x, LAYERS[:1], LAYERS[1:])
    mse_hinted = _hidden_mse(hinted, encoder, x, LAYERS[:1], LAYERS[1:])
    # one layer cannot reproduce two: both plateau, the hinted one ~18% lower (the same at weight 100 and 1000)
    assert mse_hinted < 0.9 * mse_plain, (mse_plain, mse_hinted)
    assert encoder.training is False and all(p.requires_grad for p in encoder.parameters())  # the teacher is left as it was


def test_hidden_state_hints_are_refused_where_they_cannot_work(encoder, bound):
    import pytest

    from frugalml.errors import ConfigError

    with pytest.raises(ConfigError, match="finetune.distill > 0"):
        prune_with_metrics(copy.deepcopy(encoder), StructuredPrune(
            ratio=0.25, finetune={"epochs": 1, "hints": [{"student": LAYERS[0], "teacher": LAYERS[0]}]}), bound)
    with pytest.raises(ConfigError, match="has no layer 'backbone.nope'; candidates: backbone"):
        prune_with_metrics(copy.deepcopy(encoder), StructuredPrune(
            ratio=0.25, finetune={"epochs": 1, "distill": 1.0, "hints": [{"student": "backbone.nope", "teacher": LAYERS[0]}]}),
            bound)


def test_activation_importance_and_reconstruction_bring_a_pruned_encoder_closer(encoder, bound):
    """On token inputs: padding is left out of the statistics, the attention output and FFN output
    projections of every layer are refitted, and the embeddings end nearer the unpruned model's."""
    from frugalml.measure.task import cosine

    cfg = StructuredPrune(ratio=0.25, importance="activation", reconstruct=True, calibration_batches=4)
    pruned, metrics = prune_with_metrics(copy.deepcopy(encoder), cfg, bound, seed=0)
    plain = prune_with_metrics(copy.deepcopy(encoder), cfg.model_copy(update={"reconstruct": False}), bound, seed=0)[0]
    assert pruned.heads() == [3, 3]
    refitted = metrics["steps"][0]["reconstructed"]
    assert sorted(refitted) == sorted(f"backbone.encoder.layer.{i}.{p}.dense" for i in range(2)
                                      for p in ("attention.output", "output"))
    assert all(r["refitted"] and r["mse_after"] < r["mse_before"] for r in refitted.values())
    assert all(r.get("residual") for r in refitted.values())  # BERT's post-norm blocks: residual-corrected targets
    from frugalml.compress.prune._calibrate import calibration_batches

    batches = calibration_batches(bound, 4, seed=0)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert tokens < sum(b["attention_mask"].numel() for b in batches)  # the batches hold padding
    assert all(r["rows"] == tokens for r in refitted.values())  # real tokens only
    x, ref = bound.x_test, bound.y_test
    with torch.no_grad():
        assert cosine(pruned(x), ref).mean() > cosine(plain(x), ref).mean()

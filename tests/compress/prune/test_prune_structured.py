"""Structured pruning: every zoo model shrinks, keeps its output shape and round-trips as an artifact;
the dependency-graph surgery is exact (removed units contribute nothing); budgets are met."""

from __future__ import annotations

import copy

import pytest
import torch

from frugalml import artifact
from frugalml.compress.prune import StructuredPrune, prune, prune_with_metrics
from frugalml.compress.prune import structured as structured_mod
from frugalml.errors import ConfigError
from frugalml.measure import count_flops
from frugalml.models import list_models


def _macs(model, data):
    return count_flops(model.eval(), data.sample_input(1))["macs"]


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_structured_prune_shrinks_every_zoo_model(name, data, zoo, spec, tmp_path):
    model = zoo(name)
    x = data.sample_input(5)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    params0, macs0 = _params(model), _macs(model, data)

    pruned, metrics = prune_with_metrics(model, StructuredPrune(ratio=0.5), data)

    out = pruned(x)
    assert out.shape == (5, data.num_classes)
    assert torch.isfinite(out).all()
    assert _params(pruned) < 0.8 * params0
    assert _macs(pruned, data) < 0.8 * macs0
    assert metrics["macs_after"] == _macs(pruned, data) and metrics["macs_before"] == macs0
    assert metrics["pruned_channels"], "per-layer widths must be reported"
    # the zoo needs no retry and tp skips no group of it: every layer left alone is so by design
    expected = ("the classifier", "the model keeps its width", "coupled to")
    assert all(r.startswith(expected) for r in metrics["left_unpruned"].values()), metrics["left_unpruned"]
    # the input model is untouched and the output is a plain module
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state_before.items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in pruned.modules())

    artifact.save(pruned, tmp_path, spec(name))
    loaded = artifact.load(tmp_path)
    assert torch.equal(loaded(x), pruned(x))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_recurrent_hidden_units_are_removed_exactly(cell, data, zoo):
    """Pruned hidden units must be exactly the ones whose outgoing weights we zero in the original."""
    ref = zoo(cell, layers=2)
    pruned = prune(ref, StructuredPrune(ratio=0.5), data)
    h0, h1 = ref.rnn.hidden_size, pruned.rnn.hidden_size
    assert h1 == h0 // 2
    # identify kept units by their (unique, random) input bias in the last layer
    b0, b1 = ref.rnn.bias_ih_l1[:h0], pruned.rnn.bias_ih_l1[:h1]
    drop = [j for j in range(h0) if not (b1 == b0[j]).any()]
    assert len(drop) == h0 - h1
    zeroed = copy.deepcopy(ref)
    with torch.no_grad():
        for k in range(2):
            getattr(zeroed.rnn, f"weight_hh_l{k}")[:, drop] = 0
        zeroed.rnn.weight_ih_l1[:, drop] = 0
        zeroed.head[0].weight[:, drop] = 0
        # the head's hidden neurons were pruned too: silence the removed ones
        w_ref, w_new = zeroed.head[2].weight, pruned.head[2].weight
        kept = [j for j in range(w_ref.shape[1]) if any(torch.equal(w_ref[:, j], w_new[:, i]) for i in range(w_new.shape[1]))]
        mask = torch.zeros(w_ref.shape[1])
        mask[kept] = 1
        w_ref.mul_(mask)
    x = data.sample_input(3)
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=0, atol=1e-6)


def test_transformer_heads_are_removed_exactly(data, zoo):
    ref = zoo("transformer", heads=4, dim=32)
    # keep the residual width so removed heads/MLP units are the only change
    pruned = prune(ref, StructuredPrune(ratio=0.5, ignore=["patch_embed"]), data)
    zeroed = copy.deepcopy(ref)
    for blk_ref, blk_new, blk_zero in zip(ref.blocks, pruned.blocks, zeroed.blocks):
        assert blk_new.attn.num_heads == 2 and blk_new.attn.head_dim == blk_ref.attn.head_dim
        assert blk_new.mlp[0].out_features < blk_ref.mlp[0].out_features
        for layer in ("attn.proj", "mlp.3"):
            w_ref = blk_ref.get_submodule(layer).weight
            w_new = blk_new.get_submodule(layer).weight
            kept = [j for j in range(w_ref.shape[1]) if any(torch.equal(w_ref[:, j], w_new[:, i]) for i in range(w_new.shape[1]))]
            assert len(kept) == w_new.shape[1]
            mask = torch.zeros(w_ref.shape[1])
            mask[kept] = 1
            with torch.no_grad():
                blk_zero.get_submodule(layer).weight.mul_(mask)
    x = data.sample_input(3)
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=0, atol=1e-5)


def test_macs_budget_is_met_without_overshooting(data, zoo):
    model = zoo("resnet8")
    pruned, metrics = prune_with_metrics(model, StructuredPrune(macs_budget=0.5), data)
    kept = _macs(pruned, data) / _macs(model, data)
    assert 0.35 < kept <= 0.5
    assert metrics["mac_reduction"] >= 2.0


def test_latency_budget_loop_stops_under_budget(data, zoo, monkeypatch):
    # a deterministic stand-in for the timer (MACs-proportional), so the loop logic is what is tested
    calls = []

    def fake_latency(model, data, measure_config):
        calls.append(1)
        return _macs(model, data) / 1e5

    monkeypatch.setattr(structured_mod, "latency_b64", fake_latency)
    model = zoo("cnn")
    budget = 0.6 * _macs(model, data) / 1e5
    pruned, metrics = prune_with_metrics(model, StructuredPrune(latency_budget_ms=budget), data)
    assert fake_latency(pruned, data, None) <= budget
    assert metrics["latency_b64_ms_after"] <= budget < metrics["latency_b64_ms_before"]
    assert len(calls) > 3  # measured after every increment


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor", "random", "activation"])
def test_every_importance_criterion_prunes(importance, data, zoo):
    model = zoo("cnn", channels=[8, 16])
    cfg = StructuredPrune(ratio=0.5, importance=importance, taylor_batches=1)
    pruned, metrics = prune_with_metrics(model, cfg, data)
    assert pruned.fc.in_features == 8
    assert metrics["importance"] == importance
    assert all(p.grad is None for p in pruned.parameters())  # taylor's gradients are not left behind


def test_importance_changes_which_channels_go(data, zoo):
    model = zoo("cnn", channels=[8, 16])
    a = prune(model, StructuredPrune(ratio=0.5, importance="l1"), data)
    b = prune(model, StructuredPrune(ratio=0.5, importance="random"), data, seed=3)
    assert not torch.equal(a.features[0][0].weight, b.features[0][0].weight)


def test_bn_scale_needs_batchnorm(data, zoo):
    with pytest.raises(ConfigError, match="bn_scale"):
        prune(zoo("mlp"), StructuredPrune(ratio=0.5, importance="bn_scale"), data)


def test_iterative_steps_finetune_between(data, zoo, tmp_path):
    model = zoo("cnn", channels=[8, 16])
    cfg = StructuredPrune(ratio=0.5, steps=2, finetune={"epochs": 2, "lr": 0.01})
    pruned, metrics = prune_with_metrics(model, cfg, data, workdir=tmp_path)
    steps = metrics["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[0]["macs"] > steps[1]["macs"]
    assert [s["finetune"]["epochs"] for s in steps] == [1, 1]
    assert pruned.fc.in_features == 8
    assert (tmp_path / "finetune_step1").is_dir() and (tmp_path / "finetune_step2").is_dir()


def test_structured_prune_keeps_the_fine_tuned_batchnorm_statistics(data, zoo, monkeypatch, tmp_path):
    """The model after pruning is the fine-tuned one: the output check after the last step runs in
    eval mode, even when fine-tuning leaves the model in train mode (a user's loop may)."""
    from frugalml.compress.prune import api

    tuned = {}

    def finetune_then_train_mode(model, ft, inputs, **kw):
        out = real(model, ft, inputs, **kw)
        tuned.update({k: v.clone() for k, v in model.state_dict().items() if "running_" in k})
        model.train()
        return out

    real = api.finetune
    monkeypatch.setattr(api, "finetune", finetune_then_train_mode)
    model = zoo("cnn", channels=[8, 16])
    pruned = prune(model, StructuredPrune(ratio=0.5, finetune={"epochs": 1, "lr": 0.01}), data, workdir=tmp_path)
    assert tuned, "the cnn has BatchNorm layers"
    after = pruned.state_dict()
    assert all(torch.equal(after[k], v) for k, v in tuned.items())


def test_per_layer_sensitivity_ratios_average_to_target(data, zoo, tmp_path):
    model = zoo("cnn", channels=[8, 16, 24])
    cfg = StructuredPrune(ratio=0.5, per_layer="sensitivity")
    pruned, metrics = prune_with_metrics(model, cfg, data, workdir=tmp_path)
    ratios = metrics["per_layer_ratios"]
    widths = {"features.0.0": 8, "features.1.0": 16, "features.2.0": 24}
    assert set(ratios) == set(widths)
    mean = sum(ratios[k] * w for k, w in widths.items()) / sum(widths.values())
    assert mean == pytest.approx(0.5, abs=0.02)
    assert (tmp_path / "sensitivity" / "sensitivity.json").is_file()
    assert _params(pruned) < _params(model)


def test_targets_limit_pruning_to_named_layers(data, zoo):
    model = zoo("cnn", channels=[8, 16, 24])
    pruned = prune(model, StructuredPrune(ratio=0.5, targets=["features.1"]), data)
    assert [pruned.features[i][0].out_channels for i in range(3)] == [8, 8, 24]

"""Structured pruning with calibration data: `importance: activation` ranks channels by what they add to
their consumers' outputs (dead units go first, whatever their weights), and `reconstruct` refits the
layers that lost inputs by least squares (exact when the removed inputs were redundant)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from frugalml.compress.prune import StructuredPrune, prune, prune_with_metrics
from frugalml.compress.prune._calibrate import (
    OutputContribution,
    computes_post_norm,
    input_norms,
    reconstruct,
    refit,
    refittable,
    residual_block,
)
from frugalml.models import list_models


def _dead_and_alive(data) -> nn.Module:
    """Hidden units 0 and 1 have the largest weights and never fire (bias -1e4 under a ReLU);
    units 2 and 3 have small weights and always fire."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 4), nn.ReLU(), nn.Linear(4, data.num_classes)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 256) * torch.tensor([1.0, 1.0, 0.01, 0.01])[:, None])
        model[1].bias.copy_(torch.tensor([-1e4, -1e4, 1.0, 1.0]))
        model[3].weight.copy_(torch.randn(data.num_classes, 4) * torch.tensor([10.0, 10.0, 0.1, 0.1]))
    return model


def test_activation_importance_removes_dead_units_that_magnitude_keeps(data):
    model = _dead_and_alive(data)
    x = data.x_test[:16]
    by_activation = prune(model, StructuredPrune(ratio=0.5, importance="activation", calibration_batches=2), data)
    by_weight = prune(model, StructuredPrune(ratio=0.5, importance="l2"), data)
    assert by_activation[1].out_features == by_weight[1].out_features == 2
    with torch.no_grad():
        torch.testing.assert_close(by_activation(x), model(x))  # only the dead units went
        assert not torch.allclose(by_weight(x), model(x), atol=1e-3)  # magnitude removed the live ones


@pytest.mark.parametrize("name", list_models())
def test_activation_importance_and_reconstruct_on_every_zoo_model(name, data, zoo):
    """Flatten -> Linear (lenet5), grouped and depthwise convs, recurrent and attention layers: every
    group gets one score per channel, so nothing is left unpruned beyond what l1 leaves."""
    model = zoo(name)
    cfg = StructuredPrune(ratio=0.5, importance="activation", reconstruct=True, calibration_batches=1)
    pruned, metrics = prune_with_metrics(model, cfg, data)
    _, by_l1 = prune_with_metrics(model, StructuredPrune(ratio=0.5), data)
    assert metrics["left_unpruned"] == by_l1["left_unpruned"]
    assert metrics["params_after"] == by_l1["params_after"]  # the same widths, other channels
    with torch.no_grad():
        assert torch.isfinite(pruned(data.x_test[:4])).all()


def test_activation_scores_of_a_flattened_conv_average_each_channels_positions(data):
    """conv -> Flatten -> Linear: the Linear reads each channel at 16 x 16 positions; a channel whose
    outputs are all zero scores lowest, and the score has one entry per channel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 256, data.num_classes)).eval()
    with torch.no_grad():
        model[0].bias[2] = -1e4  # channel 2 never fires
    pruned = prune(model, StructuredPrune(ratio=0.25, importance="activation", calibration_batches=2), data)
    assert pruned[0].out_channels == 3
    kept_bias = pruned[0].bias.detach()
    assert (kept_bias > -1e3).all()  # the dead channel went
    x = data.x_test[:8]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x))


def test_a_group_that_never_fires_falls_back_to_magnitude_instead_of_nan(data):
    model = _dead_and_alive(data)
    with torch.no_grad():
        model[1].bias[2:] = -1e4  # now every hidden unit is dead
    x = data.x_train[:32]
    scorer = OutputContribution()
    scorer.norms = input_norms(model, [x])
    assert float(scorer.norms[model[3]].sum()) == 0.0  # the classifier reads only zeros
    pruned = prune(model, StructuredPrune(ratio=0.5, importance="activation", calibration_batches=1), data)
    assert pruned[1].out_features == 2
    assert pruned[1].weight.abs().min(dim=1).values.max() > 1e-3  # units 0 and 1 kept, as l2 keeps them
    assert (pruned[1].weight.abs().max(dim=1).values > 0.5).all()


def test_reconstruct_with_steps_refits_to_the_model_each_step_started_from(data, zoo, monkeypatch):
    from frugalml.compress.prune import structured as structured_mod

    seen = []
    real = structured_mod.reconstruct

    def spy(pruned, reference, batches):
        seen.append(sum(p.numel() for p in reference.parameters()))
        return real(pruned, reference, batches)

    monkeypatch.setattr(structured_mod, "reconstruct", spy)
    model = zoo("mlp")
    cfg = StructuredPrune(ratio=0.5, steps=2, importance="activation", reconstruct=True, calibration_batches=1)
    _, metrics = prune_with_metrics(model, cfg, data)
    assert len(seen) == 2 and seen[0] == sum(p.numel() for p in model.parameters()) > seen[1]
    assert all("reconstructed" in s for s in metrics["steps"])


def _redundant_pair() -> tuple[nn.Module, nn.Module, list[torch.Tensor]]:
    """A reference whose hidden units 3 and 4 copy units 0 and 1, and the same model with them cut."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2)).eval()
    with torch.no_grad():
        ref[0].weight[3:] = ref[0].weight[:2]
        ref[0].bias[3:] = ref[0].bias[:2]
    pruned = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        pruned[0].weight.copy_(ref[0].weight[:3])
        pruned[0].bias.copy_(ref[0].bias[:3])
        pruned[1].weight.copy_(ref[1].weight[:, :3])  # the copies' contributions are simply lost
        pruned[1].bias.copy_(ref[1].bias)
    return ref, pruned, [torch.randn(64, 3) for _ in range(3)]


def test_refit_is_exact_when_the_removed_inputs_were_redundant():
    ref, pruned, batches = _redundant_pair()
    x = torch.cat(batches)
    assert refittable(pruned, ref) == ["1"]  # layer 0 lost outputs, not inputs: not refitted
    with torch.no_grad():
        assert (pruned(x) - ref(x)).abs().max() > 0.05
        stats = refit(pruned[1], ref[1], pruned, ref, batches, ridge=0.0)
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-5, rtol=1e-5)
    assert stats["refitted"] and stats["rows"] == 192 and stats["mse_after"] < 1e-9 < stats["mse_before"]


def test_reconstruct_with_its_default_ridge_reduces_the_error_and_keeps_a_missing_bias():
    ref, pruned, batches = _redundant_pair()
    no_bias = copy.deepcopy(pruned)
    no_bias[1].bias = None
    ref_nb = copy.deepcopy(ref)
    ref_nb[1].bias = None
    for p, r in ((pruned, ref), (no_bias, ref_nb)):
        report = reconstruct(p, r, batches)
        assert set(report) == {"1"}
        assert report["1"]["mse_after"] < report["1"]["mse_before"] / 50
    assert no_bias[1].bias is None  # the artifact's layout (no bias) is kept


class _PostNormBlock(nn.Module):  # BERT's SelfOutput / Output
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense, self.LayerNorm, self.dropout = nn.Linear(width, 4), nn.LayerNorm(4), nn.Dropout(0.1)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _NormThenAdd(_PostNormBlock):  # the same children, but the second argument is added after the norm
    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + self.LayerNorm(self.dense(hidden))


class _Residual(nn.Module):
    def __init__(self, width: int, block: type = _PostNormBlock) -> None:
        super().__init__()
        self.skip, self.up, self.out = nn.Linear(3, 4), nn.Linear(3, width), block(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(x), self.skip(x))


def test_refit_of_a_residual_projection_also_cancels_the_error_in_its_residual():
    """The block computes LayerNorm(dense(h) + residual); the pruned model's residual is off (as after
    earlier pruned layers), and only a target that makes up for it gives back the unpruned output."""
    torch.manual_seed(0)
    ref, pruned = _Residual(5).eval(), _Residual(3).eval()
    with torch.no_grad():
        ref.up.weight[3:] = ref.up.weight[:2]  # redundant copies, as in _redundant_pair
        ref.up.bias[3:] = ref.up.bias[:2]
        pruned.up.load_state_dict({"weight": ref.up.weight[:3], "bias": ref.up.bias[:3]})
        pruned.skip.load_state_dict({"weight": ref.skip.weight + 0.3 * torch.randn(4, 3), "bias": ref.skip.bias})
        pruned.out.dense.load_state_dict({"weight": ref.out.dense.weight[:, :3], "bias": ref.out.dense.bias})
        pruned.out.LayerNorm.load_state_dict(ref.out.LayerNorm.state_dict())
    batches = [torch.randn(64, 3) for _ in range(3)]
    x = torch.cat(batches)
    assert refittable(pruned, ref) == ["out.dense"]
    assert residual_block(pruned, "out.dense") is pruned.out and residual_block(pruned, "up") is None
    plain = copy.deepcopy(pruned)
    stats = refit(pruned.out.dense, ref.out.dense, pruned, ref, batches, ridge=0.0, blocks=(pruned.out, ref.out))
    refit(plain.out.dense, ref.out.dense, plain, ref, batches, ridge=0.0)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-4, rtol=1e-4)
        assert (plain(x) - ref(x)).abs().max() > 0.05  # the dense outputs match, the residual error stays
    assert stats["residual"] and stats["refitted"] and stats["mse_after"] < 1e-9
    assert reconstruct(copy.deepcopy(plain), ref, batches)["out.dense"]["residual"]
    # children that look alike but another computation: checked on data, and refitted to the plain target
    other_ref, other = _Residual(5, _NormThenAdd).eval(), _Residual(3, _NormThenAdd).eval()
    other.load_state_dict(pruned.state_dict())
    other_ref.load_state_dict(ref.state_dict())
    assert residual_block(other_ref, "out.dense") is other_ref.out
    assert computes_post_norm(ref, ref.out, ref.out.dense, x)
    assert not computes_post_norm(other_ref, other_ref.out, other_ref.out.dense, x)
    assert "residual" not in reconstruct(other, other_ref, batches)["out.dense"]


@pytest.mark.parametrize("importance", ["l1", "activation"])
def test_reconstruct_in_a_prune_stage_reports_each_refitted_layer(importance, data, zoo):
    model = zoo("mlp")
    cfg = StructuredPrune(ratio=0.5, importance=importance, reconstruct=True, calibration_batches=2)
    pruned, metrics = prune_with_metrics(model, cfg, data)
    plain = prune(model, cfg.model_copy(update={"reconstruct": False}), data)
    refitted = metrics["steps"][0]["reconstructed"]
    assert list(refitted) == refittable(pruned, model) != []
    assert all(r["mse_after"] < r["mse_before"] for r in refitted.values())
    x = data.x_train  # the calibration batches (2 x 32, shuffled) come from here
    with torch.no_grad():
        assert (pruned(x) - model(x)).pow(2).mean() < (plain(x) - model(x)).pow(2).mean()

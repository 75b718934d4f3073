"""Unstructured magnitude pruning (one-shot, gradual AGP) and N:M masks: exact sparsity, no hooks left,
compact artifacts that round-trip exactly."""

from __future__ import annotations

import pytest
import torch
import zstandard

from frugalml import artifact
from frugalml.compress.prune import NMPrune, UnstructuredPrune, prune, prune_with_metrics
from frugalml.compress.prune._layers import weight_params
from frugalml.compress.prune.nm import check_nm, nm_mask
from frugalml.compress.prune.unstructured import AGPCallback, MagnitudeMasks, agp_sparsity, lamp_scores
from frugalml.compress.storage.packed import save_packed
from frugalml.models import list_models
from frugalml.train import TrainConfig, Trainer


def _zero_fraction(tensors):
    return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)


def _plain(model):
    """No reparametrization, masks or hooks left behind."""
    keys = list(model.state_dict())
    return (
        not any(k.endswith(("_orig", "_mask")) for k in keys)
        and not any(m._forward_pre_hooks for m in model.modules())
    )


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scope", ["global", "layer", "lamp"])
def test_sparsity_hits_target_on_every_zoo_model(name, scope, data, zoo):
    model = zoo(name)
    pruned, metrics = prune_with_metrics(model, UnstructuredPrune(ratio=0.8, scope=scope), data)
    weights = [getattr(m, p) for _, m, p in weight_params(pruned, None, [])]
    assert _zero_fraction(weights) == pytest.approx(0.8, abs=0.01)
    assert metrics["sparsity"] == pytest.approx(_zero_fraction(weights), abs=1e-6)
    if scope == "layer":
        assert all(_zero_fraction([w]) == pytest.approx(0.8, abs=0.01) for w in weights)
    assert _plain(pruned)
    assert list(pruned.state_dict()) == list(model.state_dict())  # same keys, same order
    x = data.sample_input(3)
    assert pruned(x).shape == (3, data.num_classes)


def test_global_scope_keeps_the_largest_weights(data, zoo):
    model = zoo("mlp")
    pruned = prune(model, UnstructuredPrune(ratio=0.5), data)
    orig = [getattr(m, p).detach() for _, m, p in weight_params(model, None, [])]
    new = [getattr(m, p).detach() for _, m, p in weight_params(pruned, None, [])]
    threshold = torch.cat([o.abs().flatten() for o in orig]).median()
    for o, n in zip(orig, new):
        kept = n != 0
        assert torch.equal(n[kept], o[kept])  # survivors untouched
        assert (o[~kept].abs() <= threshold + 1e-12).all() and (o[kept].abs() >= threshold - 1e-12).all()


def test_ignore_and_targets_select_layers(data, zoo):
    model = zoo("cnn", channels=[8, 16])
    pruned = prune(model, UnstructuredPrune(ratio=0.9, ignore=["fc"]), data)
    assert (pruned.fc.weight != 0).all()
    pruned = prune(model, UnstructuredPrune(ratio=0.9, targets=["features.1"]), data)
    assert (pruned.features[0][0].weight != 0).all() and (pruned.fc.weight != 0).all()
    assert _zero_fraction([pruned.features[1][0].weight]) == pytest.approx(0.9, abs=0.01)


def test_oneshot_finetune_keeps_pruned_weights_at_zero(data, zoo, tmp_path):
    model = zoo("cnn", channels=[8, 16])
    cfg = UnstructuredPrune(ratio=0.7, finetune={"epochs": 1, "lr": 0.05})
    pruned, metrics = prune_with_metrics(model, cfg, data, workdir=tmp_path)
    first = prune(model, UnstructuredPrune(ratio=0.7), data)
    for (_, a, p), (_, b, _) in zip(weight_params(pruned, None, []), weight_params(first, None, [])):
        wa, wb = getattr(a, p), getattr(b, p)
        assert torch.equal(wa == 0, wb == 0)  # the mask chosen before fine-tuning holds
        assert not torch.equal(wa, wb)  # and the survivors did train
    assert metrics["finetune"]["epochs"] == 1
    assert _plain(pruned)


def test_agp_schedule_formula():
    assert agp_sparsity(0.9, 0.0) == 0.0
    assert agp_sparsity(0.9, 1.0) == pytest.approx(0.9)
    assert agp_sparsity(0.9, 0.5) == pytest.approx(0.9 * (1 - 0.5**3))
    assert agp_sparsity(0.9, 2.0) == pytest.approx(0.9)  # clipped after the ramp


def test_gradual_agp_ramps_inside_the_trainer(data, zoo):
    model = zoo("cnn", channels=[8, 16]).train()
    masks = MagnitudeMasks(weight_params(model, None, []), "global")
    seen: list[float] = []

    class Spy:
        def on_step_end(self, trainer, step, loss):
            seen.append(masks.sparsity())

    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, seed=0)
    Trainer(model, data, cfg, callbacks=[AGPCallback(masks, 0.8), Spy()], progress=False).fit()
    assert all(b >= a for a, b in zip(seen, seen[1:])), "AGP only ever raises sparsity"
    assert seen[0] < 0.4 and seen[-1] == pytest.approx(0.8, abs=0.005)
    assert len(set(round(s, 3) for s in seen)) > 3  # it is gradual, not one jump


def test_gradual_stage_reaches_target_at_the_end(data, zoo, tmp_path):
    model = zoo("cnn", channels=[8, 16])
    cfg = UnstructuredPrune(ratio=0.9, schedule="gradual", finetune={"epochs": 2, "lr": 0.01})
    pruned, metrics = prune_with_metrics(model, cfg, data, workdir=tmp_path)
    assert metrics["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert metrics["finetune"]["epochs"] == 2
    assert _plain(pruned)


def _artifact_bytes(d):
    files = artifact.artifact_files(d)
    raw = sum(f.stat().st_size for f in files)
    packed = sum(len(zstandard.ZstdCompressor(level=19).compress(f.read_bytes())) for f in files)
    return raw, packed


@pytest.mark.parametrize("name", list_models())
def test_sparse_artifact_round_trips_exactly_and_is_smaller(name, data, spec, zoo, tmp_path):
    model = zoo(name)
    pruned = prune(model, UnstructuredPrune(ratio=0.9), data)
    save_packed(pruned, tmp_path / "sparse", spec(name))
    artifact.save(pruned, tmp_path / "dense", spec(name))
    artifact.save(model, tmp_path / "baseline", spec(name))
    loaded = artifact.load(tmp_path / "sparse")
    assert list(loaded.state_dict()) == list(pruned.state_dict())
    for k, v in pruned.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = data.sample_input(4)
    assert torch.equal(loaded(x), pruned(x))
    sparse_raw, sparse_z = _artifact_bytes(tmp_path / "sparse")
    dense_raw, dense_z = _artifact_bytes(tmp_path / "dense")
    _, baseline_z = _artifact_bytes(tmp_path / "baseline")
    # 90% zeros: bitmask + values beat the dense file even before compression (BN/bias/JSON stay
    # dense, hence 3x on BN-heavy nets), stay ahead of zstd on the zero-filled dense file, and the
    # compressed artifact the report compares is several times smaller than the unpruned model's
    assert sparse_raw < dense_raw / 3
    assert sparse_z < dense_z
    assert sparse_z < baseline_z / (5 if name == "cnn" else 3)


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "transformer"])
def test_nm_masks_have_n_nonzeros_in_every_group(name, data, zoo):
    model = zoo(name)
    pruned, metrics = prune_with_metrics(model, NMPrune(n=2, m=4), data)
    checked = 0
    for layer, mod, p in weight_params(pruned, None, []):
        w = getattr(mod, p)
        if f"{layer}.{p}" in metrics["dense_layers"]:
            assert (w != 0).all()
            continue
        grouped = (w.movedim(1, -1) if w.dim() > 2 else w).reshape(-1, 4)
        assert ((grouped != 0).sum(-1) == 2).all(), layer  # random init has no zeros of its own
        assert check_nm(w, 2, 4)
        checked += 1
    assert checked > 0 and _plain(pruned)
    assert "CPU" in metrics["note"]


def test_nm_pattern_survives_finetuning(data, zoo):
    model = zoo("mlp")
    pruned = prune(model, NMPrune(n=1, m=4, finetune={"epochs": 1, "lr": 0.05}), data)
    for _, mod, p in weight_params(pruned, None, []):
        assert check_nm(getattr(mod, p), 1, 4)


def test_nm_mask_groups_conv_weights_along_input_channels():
    w = torch.randn(3, 8, 3, 3)
    mask = nm_mask(w, 2, 4)
    assert mask.shape == w.shape
    assert (mask.movedim(1, -1).reshape(-1, 4).sum(-1) == 2).all()
    assert nm_mask(torch.randn(3, 6), 2, 4) is None  # 6 inputs: not a multiple of 4


def test_lamp_scores_match_the_papers_definition():
    # sorted squares 1, 4, 9, 16: each over the sum of itself and the larger ones
    w = torch.tensor([[-3.0, 1.0], [4.0, -2.0]])
    expected = torch.tensor([[9 / 25, 1 / 30], [1.0, 4 / 29]])
    assert torch.allclose(lamp_scores(w), expected)
    assert torch.equal(lamp_scores(torch.zeros(3)), torch.zeros(3))


def _two_layer_masks(scale: float, scope: str):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 20), torch.nn.Linear(20, 20))
    with torch.no_grad():
        net[1].weight.mul_(scale)  # what BatchNorm after a layer lets weight decay do
    masks = MagnitudeMasks(weight_params(net, None, []), scope)
    masks.set_sparsity(0.8)
    return [(net[i].weight_mask == 1).clone() for i in range(2)]


def test_lamp_masks_ignore_a_layers_scale_and_global_magnitude_does_not():
    lamp = _two_layer_masks(1.0, "lamp")
    assert [torch.equal(a, b) for a, b in zip(lamp, _two_layer_masks(0.01, "lamp"))] == [True, True]
    shrunk = _two_layer_masks(0.01, "global")
    assert int(shrunk[1].sum()) == 0  # one magnitude threshold prunes the shrunken layer away entirely
    assert all(int(m.sum()) > 0 for m in lamp)  # LAMP keeps each layer's largest weight

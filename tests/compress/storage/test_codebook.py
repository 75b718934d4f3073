"""Weight sharing: k-means codebooks keep zeros, centroids fine-tune by their weights' mean gradient,
bake to plain."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from frugalml.compress.storage import (
    CodebookWeight,
    apply_codebooks,
    bake_codebooks,
    decode_tensor,
    encode_tensor,
    kmeans_codebook,
)
from frugalml.errors import ConfigError


def _pruned(shape=(200, 300), keep=0.3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < keep) + 0.0


def _rebuild(codebook, assignments, mask):
    return torch.where(mask, codebook[assignments], 0.0)


@pytest.mark.parametrize("bits, max_error", [(8, 0.015), (5, 0.07), (2, 0.4)])
def test_kmeans_reconstructs_a_gaussian_to_the_expected_error(bits, max_error):
    w = torch.randn(300, 400, generator=torch.Generator().manual_seed(0))
    codebook, assignments = kmeans_codebook(w, bits)
    assert codebook.shape == (1 << bits,) and bool((codebook.diff() >= 0).all())
    error = float((_rebuild(codebook, assignments, w != 0) - w).norm() / w.norm())
    assert error < max_error
    # Lloyd improves on its linear initialisation (the uniform quantizer between min and max)
    linear = torch.linspace(float(w.min()), float(w.max()), 1 << bits)
    uniform = linear[(w.reshape(-1, 1) - linear).abs().argmin(1)].reshape(w.shape)
    assert error < float((uniform - w).norm() / w.norm())


def test_kmeans_keeps_zeros_exactly_zero_and_ignores_them():
    w = _pruned()
    mask = w != 0
    codebook, assignments = kmeans_codebook(w, 4)
    rebuilt = _rebuild(codebook, assignments, mask)
    assert torch.equal(rebuilt == 0, ~mask)
    assert bool((assignments[~mask] == 0).all())
    # the zeros did not pull a centroid to zero: clustering only the nonzeros gives the same codebook
    assert torch.equal(codebook, kmeans_codebook(w[mask], 4)[0])


def test_kmeans_initialises_linearly_between_min_and_max():
    # init -3, -1/3, 7/3, 5: the values -3, 1, 5 take centroids 0, 1 and 3; centroid 2 keeps its init
    codebook, _ = kmeans_codebook(torch.tensor([-3.0, 0.0, 1.0, 5.0]), 2)
    assert codebook.tolist() == pytest.approx([-3.0, 1.0, -3 + 16 / 3, 5.0])


def test_each_centroid_moves_by_the_mean_gradient_of_its_weights():
    """Not the sum (the paper's update): a summed step grows with the cluster's population, and lr 0.01
    that fine-tunes a 90%-sparse CNN's codebooks destroyed the dense CNN's (83 points lost)."""
    layer = nn.Linear(300, 200, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_pruned())
    plain = layer.weight.detach().clone()
    apply_codebooks(layer, 3)
    p = layer.parametrizations.weight
    a, mask = p[0].assignments.long(), p[0].mask
    # the forward values are exactly the codebook's: the gradient scaling does not round them
    assert torch.equal(layer.weight, torch.where(mask, p.original[a], 0.0))
    assert (layer.weight - plain).norm() < 0.25 * plain.norm()  # and near the weights they replace
    upstream = torch.randn(200, 300, generator=torch.Generator().manual_seed(1))
    (layer.weight * upstream).sum().backward()
    sums = torch.zeros(8).index_add_(0, a[mask], upstream[mask])
    counts = torch.bincount(a[mask], minlength=8)
    assert bool((counts > 100).all())  # every centroid shared by many weights: sum and mean differ a lot
    assert torch.allclose(p.original.grad, sums / counts, atol=1e-5)
    assert [n for n, _ in layer.named_parameters()] == [
        "parametrizations.weight.original"
    ]  # no dead full weight
    assert "parametrizations.weight.0.share" not in layer.state_dict()  # derived, not saved


def test_fine_tuning_moves_centroids_and_keeps_zeros_and_sharing():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.mul_(torch.rand(m.weight.shape, generator=g) < 0.5)
    mask = model[0].weight != 0
    x, y = torch.randn(256, 20, generator=g), torch.randn(256, 5, generator=g)
    apply_codebooks(model, {"0": 3, "2": 4})
    before = model[0].parametrizations.weight.original.detach().clone()
    loss0 = nn.functional.mse_loss(model(x), y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert nn.functional.mse_loss(model(x), y).item() < loss0.item()
    assert not torch.equal(model[0].parametrizations.weight.original, before)
    bake_codebooks(model)
    assert not parametrize.is_parametrized(model[0]) and isinstance(model[0].weight, nn.Parameter)
    assert torch.equal(model[0].weight == 0, ~mask)  # zeros stayed zero through training
    assert model[0].weight[mask].unique().numel() <= 8 and model[2].weight.unique().numel() <= 16 + 1


def test_baked_weights_store_as_packed_codes(same_bits):
    layer = nn.Linear(300, 200, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_pruned(keep=0.1))
    bake_codebooks(apply_codebooks(layer, 5))
    encoded = encode_tensor(layer.weight)
    assert encoded.layout["values"]["kind"] == "palette"
    nonzero = int((layer.weight != 0).sum())
    assert encoded.nbytes < nonzero * 1.5  # ~5 bits of code and ~5 of position per weight, versus 32
    same_bits(decode_tensor(encoded.streams, encoded.layout), layer.weight.detach())


def test_assigning_a_weight_sets_each_centroid_to_its_cluster_mean():
    layer = nn.Linear(300, 200, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_pruned())
    apply_codebooks(layer, 4)
    p = layer.parametrizations.weight
    assert isinstance(p[0], CodebookWeight)
    target = torch.randn(200, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        layer.weight = target  # right_inverse: the least-squares codebook for the assignments
    a, mask = p[0].assignments.long()[p[0].mask], p[0].mask
    means = torch.zeros(16).index_add_(0, a, target[mask]) / torch.bincount(a, minlength=16).clamp(min=1)
    assert torch.allclose(p.original, means, atol=1e-5)
    assert torch.equal(layer.weight == 0, ~mask)


def test_bad_requests_are_config_errors():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="bits"):
        apply_codebooks(model, {"0": 9})
    with pytest.raises(ConfigError, match="no module named 'fc9'"):
        apply_codebooks(model, {"fc9": 4})
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ConfigError, match="bake pruning first"):
        apply_codebooks(model, 4)

"""BatchNorm folding is exact, keeps zeros, and the folded model saves and loads from its spec."""

from __future__ import annotations

import torch

from frugalml import artifact
from frugalml.compress.fold import conv_bn_pairs, fold_batchnorm
from frugalml.models import build_model


def _trained_bn(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not the identity
            model(torch.randn(16, 1, 8, 8) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_folding_is_exact_keeps_zeros_and_round_trips(tmp_path):
    model = _trained_bn(build_model("cnn", (1, 8, 8), 4, channels=[8, 16]))
    with torch.no_grad():
        model.features[0][0].weight[0].zero_()  # a pruned filter
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    pairs = fold_batchnorm(model)
    assert len(pairs) == 2 and all(isinstance(model.get_submodule(b), torch.nn.Identity) for b in pairs)
    assert torch.allclose(model(x), before, atol=1e-5)
    assert bool((model.features[0][0].weight[0] == 0).all())
    assert not torch.signbit(model.features[0][0].weight[0]).any()  # zeros, not -0.0
    spec = {**model.frugal_spec, "fold_bn": pairs}
    artifact.save(model, tmp_path / "f", spec)
    loaded = artifact.load(tmp_path / "f")
    assert torch.equal(loaded(x), model(x))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())


def test_a_conv_feeding_more_than_a_batchnorm_is_not_folded():
    class Branch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the conv's output is used twice: folding would change the sum

    assert conv_bn_pairs(Branch()) == {}


def test_a_conv_and_batchnorm_applied_twice_are_not_folded():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(self.bn(self.conv(x))))  # one module, two call sites

    assert conv_bn_pairs(Twice()) == {}

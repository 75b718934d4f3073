"""Structured pruning of models users write themselves (not the zoo): coupled branches are pruned
with every importance, a forward that hard-codes a shape is detected and its layer left alone,
and every prunable layer left unpruned is reported with the reason."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from frugalml import artifact
from frugalml.compress.prune import (
    StructuredPrune,
    _tp_pruner,
    prune,
    prune_with_metrics,
    run_prune_stage,
    sensitivity,
)
from frugalml.compress.prune._tp_pruner import BranchBalanced
from frugalml.data import DataConfig, load_data
from frugalml.errors import UnsupportedError
from frugalml.stages import StageContext

CLASSIFIER = "the classifier: its outputs are the class scores"


class BranchyCNN(nn.Module):
    """Residual add, concat of a 3x3 and a 1x1 conv, depthwise + pointwise, one conv+ReLU block
    applied twice, BatchNorm, global average pooling + Linear."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.res, self.res_bn = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.left, self.right = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 8, 1)
        self.dw, self.pw = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 24, 1)
        self.block = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.res_bn(self.res(x))
        x = torch.cat([self.left(x), self.right(x)], 1)
        x = F.relu(self.pw(self.dw(x)))
        x = self.block(self.block(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MnistNet(nn.Module):
    """The classic PyTorch MNIST example: its forward reshapes with a constant, x.view(-1, 320)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(F.max_pool2d(self.conv1(x), 2))
        x = torch.relu(F.max_pool2d(self.conv2(x), 2))
        x = x.view(-1, 320)
        return self.fc2(torch.relu(self.fc1(x)))


def mnist_net(input_shape: tuple[int, int, int], num_classes: int, **kwargs) -> nn.Module:
    """A user factory (`package.module:factory` in a ModelSpec)."""
    torch.manual_seed(0)
    return MnistNet()


@pytest.fixture(scope="module")
def mnist():
    return load_data(DataConfig(name="synthetic", synthetic_samples=40, synthetic_classes=10, synthetic_shape=(1, 28, 28)))


def _branchy() -> BranchyCNN:
    torch.manual_seed(0)
    return BranchyCNN().eval()


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "random"])
def test_every_branch_of_a_hand_written_cnn_is_pruned(importance, data):
    model = _branchy()
    cfg = StructuredPrune(ratio=0.5, importance=importance, taylor_batches=1)
    pruned, metrics = prune_with_metrics(model, cfg, data)
    shrunk = metrics["pruned_channels"]
    assert set(shrunk) == {"stem", "res", "left", "right", "dw", "pw", "block.0"}
    assert shrunk["left"][1] >= 1 and shrunk["right"][1] >= 1 and shrunk["left"][1] + shrunk["right"][1] == 8
    assert metrics["left_unpruned"] == {"fc": CLASSIFIER}
    assert pruned.block[0].in_channels == pruned.block[0].out_channels == 12  # still applicable twice
    assert pruned(data.sample_input(3)).shape == (3, data.num_classes)


def test_l1_ranks_a_1x1_branch_below_a_3x3_one_unless_branches_are_balanced():
    """The cause of the unpruned concat: an L1 row norm grows with fan-in (144 for the 3x3 conv, 16
    for the 1x1), so plain L1 puts all 8 channels of `right` among the 8 weakest of the 16, and
    Torch-Pruning skips a group rather than empty one of its layers."""
    model = _branchy()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(2, 1, 16, 16))
    group = dg.get_pruning_group(model.dw, tp.prune_conv_out_channels, idxs=list(range(16)))
    plain = tp.importance.MagnitudeImportance(p=1)
    weakest = set(torch.argsort(plain(group))[:8].tolist())
    assert weakest == set(range(8, 16))  # exactly the `right` half of the concat
    balanced = set(torch.argsort(BranchBalanced(plain)(group))[:8].tolist())
    assert balanced & set(range(8)) and set(range(8, 16)) - balanced  # both branches lose and keep some


def test_without_balancing_the_skipped_concat_group_is_reported_with_the_cause(data, monkeypatch):
    monkeypatch.setattr(_tp_pruner, "BranchBalanced", lambda inner: inner)  # plain tp scoring, as before
    _, metrics = prune_with_metrics(_branchy(), StructuredPrune(ratio=0.5), data)
    reason = "its 8 lowest-scored channels are all 8 of 'right'; Torch-Pruning skips a group rather than empty a layer"
    assert {k: metrics["left_unpruned"][k] for k in ("left", "right", "dw")} == dict.fromkeys(("left", "right", "dw"), reason)
    assert set(metrics["pruned_channels"]) == {"stem", "res", "pw", "block.0"}


def test_bn_scale_reports_the_groups_it_cannot_score(data):
    _, metrics = prune_with_metrics(_branchy(), StructuredPrune(ratio=0.5, importance="bn_scale"), data)
    left = metrics["left_unpruned"]
    assert set(metrics["pruned_channels"]) == {"stem", "res"}  # the only convs followed by BatchNorm
    assert set(left) == {"left", "right", "dw", "pw", "block.0", "fc"}
    assert all("no BatchNorm follows it" in left[k] for k in ("left", "right", "dw", "pw", "block.0"))


class _OneChannelBranch(nn.Module):
    """A concat with a one-channel branch, coupled into one group by the depthwise conv after it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 7, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.mix = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(self.dw(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(x.mean((2, 3)))


def test_a_group_torch_pruning_refuses_is_reported_with_its_rule(data, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="frugalml"):
        _, metrics = prune_with_metrics(_OneChannelBranch(), StructuredPrune(ratio=0.5), data)
    assert set(metrics["pruned_channels"]) == {"mix"}
    reason = "a layer of its group has one channel left (or reached max_layer_ratio)"
    assert metrics["left_unpruned"] == {"a": reason, "b": reason, "dw": reason, "fc": CLASSIFIER}
    assert f"a left unpruned: {reason}" in caplog.text


def test_a_fixed_reshape_leaves_its_layer_unpruned_and_says_why(mnist, caplog):
    with caplog.at_level(logging.WARNING, logger="frugalml"):
        pruned, metrics = prune_with_metrics(mnist_net((1, 28, 28), 10), StructuredPrune(ratio=0.5), mnist)
    assert metrics["pruned_channels"] == {"conv1": [10, 5], "fc1": [50, 25]}
    reason = metrics["left_unpruned"]["conv2"]
    assert reason.startswith("pruning it breaks the forward pass (RuntimeError: shape '[-1, 320]' is invalid")
    assert "conv2" in caplog.text and "starting over" in caplog.text
    for n in (1, 2, 5):
        assert pruned(mnist.sample_input(n)).shape == (n, 10)


def test_user_factory_model_through_the_stage_and_its_artifact(mnist, tmp_path):
    spec = {"name": f"{__name__}:mnist_net", "kwargs": {}, "input_shape": [1, 28, 28], "num_classes": 10}
    ctx = StageContext(data=mnist, model_spec=spec, stage_dir=tmp_path)
    out = run_prune_stage(mnist_net((1, 28, 28), 10), StructuredPrune(macs_budget=0.6), ctx)
    pruning = ctx.extra_metrics["pruning"]
    assert pruning["macs_after"] <= 0.6 * pruning["macs_before"]
    assert "conv2" in pruning["left_unpruned"] and out.conv2.out_channels == 20
    artifact.save_any(out, tmp_path / "art", spec, ctx.artifact_meta)
    loaded = artifact.load(tmp_path / "art", trust_code=True)
    x = mnist.sample_input(3)
    assert torch.equal(loaded(x), out(x))


def test_sensitivity_skips_a_layer_that_cannot_be_pruned(mnist):
    table = sensitivity(mnist_net((1, 28, 28), 10), mnist, ratios=[0.5])
    assert {r["layer"] for r in table["rows"]} == {"conv1", "fc1"}
    assert "breaks the forward pass" in table["skipped"]["conv2"]


class _IndexedAttention(nn.Module):
    """Splits q/k/v by indexing: Torch-Pruning cannot map qkv rows to the output projection."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, -1))


class _Odd(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 16)
        self.attn = _IndexedAttention()
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.attn(self.embed(x[:, 0])).mean(1))


def test_unmappable_layer_is_named_and_can_be_ignored(data):
    with pytest.raises(UnsupportedError, match="'attn.qkv'.*prune.ignore"):
        prune(_Odd(data.num_classes), StructuredPrune(ratio=0.5), data)
    pruned, metrics = prune_with_metrics(_Odd(data.num_classes), StructuredPrune(ratio=0.5, ignore=["attn.qkv"]), data)
    assert pruned.embed.out_features == 8 and pruned.attn.qkv.out_features == 48
    assert metrics["left_unpruned"]["attn.qkv"] == "named in prune.ignore"
    assert pruned(data.sample_input(2)).shape == (2, data.num_classes)


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.fc = nn.Linear(256, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.flatten(1))
        return self.fc(h), h


def test_a_model_that_does_not_return_scores_is_refused_in_one_line(data):
    with pytest.raises(UnsupportedError, match=r"^structured pruning needs .* before pruning, the output is tuple"):
        prune(_TwoHeads(), StructuredPrune(ratio=0.5), data)

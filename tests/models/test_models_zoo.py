"""Every registered model, through everything the rest of frugalml does with models.

Parametrized over `list_models()`, so a newly registered model is tested the moment it exists.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from frugalml import artifact
from frugalml.models import (
    ModelConfig,
    list_models,
    make_activation,
    pruning_hints,
    sync_after_pruning,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
ZOO = list_models()
# networks whose size is fixed by the pretrained weights they load; every other default stays small
PRETRAINED_SIZED = {"efficientnet_lite0"}


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _built(name: str, shape=(1, 8, 8), classes=10, activation="relu", seed=0) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    spec = ModelConfig(name=name, activation=activation).spec(shape, classes)
    return artifact.build_from_spec(spec), spec


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _logits_layer(m: nn.Module) -> nn.Linear:
    return [x for x in m.modules() if isinstance(x, nn.Linear)][-1]


def test_zoo_has_every_family():
    expected = {"mlp", "lenet5", "cnn", "resnet8", "resnet14", "resnet20", "mobilenet_v2", "shufflenet_v2"}
    expected |= {"rnn", "lstm", "gru", "transformer"}
    assert expected <= set(ZOO)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape,classes", [(s, c) for s, c in zip(SHAPES, (10, 7, 5))])
def test_forward_shape(name, shape, classes):
    model, _ = _built(name, shape, classes)
    x = torch.randn(3, *shape)
    y = model.eval()(x)
    assert y.shape == (3, classes)
    assert torch.isfinite(y).all()
    if name not in PRETRAINED_SIZED:
        assert _n_params(model) < 1_000_000  # defaults stay small


@pytest.mark.parametrize("name", ZOO)
def test_training_steps_change_weights_and_reduce_loss(name):
    model, _ = _built(name, (3, 32, 32), 5)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    model.train()
    losses = []
    for _ in range(4):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters()), "a parameter gets no gradient"
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [
        k
        for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert len(changed) >= len([p for p in model.parameters()]) // 2


@pytest.mark.parametrize("name", ZOO)
def test_artifact_round_trip_is_exact(name, tmp_path):
    model, spec = _built(name, (1, 8, 8), 10)
    model.train()
    model(torch.randn(16, 1, 8, 8))  # move BatchNorm running stats off their init values
    model.eval()
    artifact.save(model, tmp_path / "a", spec)
    loaded = artifact.load(tmp_path / "a")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert artifact.read_info(tmp_path / "a")["spec"]["kwargs"]["activation"] == "relu"


@pytest.mark.parametrize("name", ZOO)
def test_activation_modules_are_fresh_and_used(name):
    model, _ = _built(name, (1, 8, 8), 10, activation="prelu")
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert prelus, f"{name} ignores the activation option"
    assert all(p.num_parameters == 1 for p in prelus)
    # no module instance reused at two places (pruning and fusion treat each instance as one node)
    all_uses = list(model.named_modules(remove_duplicate=False))
    assert len(all_uses) == len(list(model.named_modules()))
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("name", ZOO)
def test_traceable_by_fx_and_export(name):
    model, _ = _built(name, (1, 8, 8), 10)
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RNN flat-weight notices
            exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), ref)


@pytest.mark.parametrize("name", ZOO)
def test_torch_pruning_dependency_graph_builds(name):
    model, _ = _built(name, (3, 32, 32), 5)
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    convs_and_linears = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(m in dg.module2node for m in convs_and_linears)
    groups = list(dg.get_all_groups(ignored_layers=[_logits_layer(model)]))
    assert groups, f"{name}: nothing prunable"


@pytest.mark.parametrize("name", ZOO)
def test_pruned_model_runs_and_round_trips(name, tmp_path):
    """Channel pruning with `pruning_hints` gives a valid, smaller model that loads back exactly."""
    model, spec = _built(name, (1, 8, 8), 10)
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    hints = pruning_hints(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model,
            x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.5,
            ignored_layers=[_logits_layer(model), *hints["ignored_layers"]],
            num_heads=hints["num_heads"],
        )
        before = _n_params(model)
        pruner.step()
    sync_after_pruning(model, pruner.num_heads)
    assert _n_params(model) < before
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 10)
    artifact.save(model, tmp_path / "p", spec)
    loaded = artifact.load(tmp_path / "p")
    assert _n_params(loaded) == _n_params(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


def test_transformer_heads_can_be_pruned(tmp_path):
    model, spec = _built("transformer", (1, 8, 8), 10)
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    hints = pruning_hints(model)
    assert sorted(hints["num_heads"].values()) == [4, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
            ignored_layers=[model.head], num_heads=hints["num_heads"],
            prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5,
        )
        pruner.step()
    sync_after_pruning(model, pruner.num_heads)
    attns = [b.attn for b in model.blocks]
    assert [a.num_heads for a in attns] == [2, 2]
    assert all(a.qkv.out_features == 3 * a.num_heads * a.head_dim for a in attns)
    y = model(x)
    artifact.save(model, tmp_path / "t", spec)
    loaded = artifact.load(tmp_path / "t")
    assert [b.attn.num_heads for b in loaded.blocks] == [2, 2]
    assert torch.equal(loaded(x), y)


def test_make_activation_returns_fresh_modules():
    a, b = make_activation("relu"), make_activation("relu")
    assert a is not b and isinstance(a, nn.ReLU)
    assert isinstance(make_activation("swish"), nn.SiLU)

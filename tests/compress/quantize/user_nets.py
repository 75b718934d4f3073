"""Models written the way users write them (not from the zoo), importable as `package.module:factory`
so their quantized artifacts can be loaded back (with trust_code)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class HandCNN(nn.Module):
    """conv-BN-`F.relu` stem; a conv+ReLU block applied twice (`shared`, else two blocks) with a
    residual add; a depthwise + pointwise branch concatenated with it; BatchNorm; GAP + Linear. Its
    input is called `images`, as users name it."""

    def __init__(self, in_channels: int, num_classes: int, shared: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.block = ConvReLU(8)
        self.block2 = None if shared else ConvReLU(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(images)))
        y = (self.block2 or self.block)(self.block(x)) + x
        z = self.pw(self.dw(y))
        x = F.relu(self.bn(torch.cat([y, z], dim=1)))
        return self.fc(x.mean(dim=(2, 3)))


class MnistNet(nn.Module):
    """The classic PyTorch MNIST example (28x28 inputs, 10 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(F.max_pool2d(self.conv1(x), 2))
        x = torch.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = torch.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def hand_cnn(input_shape, num_classes, *, shared: bool = True) -> HandCNN:
    return HandCNN(input_shape[0], num_classes, shared=shared)


def mnist_net(input_shape, num_classes) -> MnistNet:
    return MnistNet()

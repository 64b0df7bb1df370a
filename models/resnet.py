"""ResNets: residual-add coupling.

Why it exists: a residual ``add`` forces the channels of both operands to be
pruned together. ``BasicBlock`` with an identity shortcut ties a block's
output channels to its input channels (a coupling group spanning several
blocks); a projection shortcut (1x1 conv + BN) breaks that chain. The
bottleneck variant (expansion 4) adds the 1x1-reduce / 3x3 / 1x1-expand
pattern where only the expanded channels are residual-coupled.

``resnet50()`` is the full ImageNet ResNet-50 (~25.6M params), used only by
benchmarks, never exported in unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.common import finalize


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Projection (1x1 conv + BN) when the shape changes, identity otherwise."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn, residual add, then ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand (x4), residual add, ReLU."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, one stage per width, GAP, Linear.

    Stage ``i > 0`` downsamples by 2. With the defaults (one BasicBlock per
    stage, widths 16/32/64) this is a "resnet8": the first block has an
    identity shortcut, the other two use projections.
    """

    def __init__(self, blocks: Sequence[int] = (1, 1, 1), widths: Sequence[int] = (16, 32, 64),
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, w, stride))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class BottleneckResNet(nn.Module):
    """Bottleneck ResNet with configurable stage depths and base width.

    ``imagenet_stem=True`` uses the 7x7/2 conv + 3x3/2 maxpool stem of the
    ImageNet models; otherwise a 3x3/1 conv stem for 32x32 inputs.
    Stage ``i`` has ``width * 2**i`` planes (x4 output channels); stages
    after the first downsample by 2.
    """

    def __init__(self, layers: Sequence[int] = (1, 1), width: int = 16, num_classes: int = 10,
                 in_channels: int = 3, imagenet_stem: bool = False) -> None:
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        blocks: list[nn.Module] = []
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck(cin, planes, stride))
                cin = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet_basic() -> CifarResNet:
    """Seeded resnet8-ish BasicBlock ResNet, eval mode, 32x32 input."""
    torch.manual_seed(0)
    return finalize(CifarResNet())


def resnet_bottleneck() -> BottleneckResNet:
    """Seeded small bottleneck ResNet (layers (1, 1), width 16), eval mode, 32x32 input."""
    torch.manual_seed(0)
    return finalize(BottleneckResNet(layers=(1, 1), width=16))


def resnet50() -> BottleneckResNet:
    """Seeded ResNet-50 (layers 3, 4, 6, 3; width 64; 1000 classes), eval mode, 224x224 input."""
    torch.manual_seed(0)
    model = BottleneckResNet(layers=(3, 4, 6, 3), width=64, num_classes=1000, imagenet_stem=True)
    return finalize(model)

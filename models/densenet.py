"""DenseNet-style block: concatenation coupling.

Why it exists: ``torch.cat([x, new], 1)`` makes every later consumer see the
channels of all earlier producers at fixed offsets. Pruning a producer's
channel removes a slice at a specific offset of each downstream consumer's
input (and of the pre-activation BatchNorms that act on the concatenation),
and the concatenation's own channel count is the sum of its parts.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


class DenseLayer(nn.Module):
    """BN -> ReLU -> 3x3 conv producing ``growth`` channels, concatenated onto the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv(self.relu(self.bn(x)))
        return torch.cat([x, new], 1)


class DenseBlockNet(nn.Module):
    """Stem conv, dense block, BN-ReLU-1x1 transition + avgpool, BN-ReLU, GAP, Linear."""

    def __init__(self, stem: int = 16, growth: int = 8, num_layers: int = 3,
                 transition: int = 24, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = stem
        for _ in range(num_layers):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        self.block = nn.Sequential(*layers)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, transition, 1, bias=False),
            nn.AvgPool2d(2),
        )
        self.norm = nn.BatchNorm2d(transition)
        self.relu = nn.ReLU(inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(transition, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        x = self.relu(self.norm(self.transition(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def densenet_block() -> DenseBlockNet:
    """Seeded DenseNet block net (16 + 3x8 = 40 concat channels), eval mode, 32x32 input."""
    torch.manual_seed(0)
    return finalize(DenseBlockNet())

"""Small VGG: flatten -> Linear block coupling.

Why it exists: the feature map is flattened while its spatial size is still
2x2, so each conv output channel ``c`` owns the 4 consecutive input columns
``4c .. 4c+3`` of the first Linear. Pruning a channel must remove a block of
Linear input features, not a single one. The classifier also has a
Linear -> ReLU -> Linear chain (plain 1:1 feature coupling).
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize

from models.plain import conv_bn_relu


class SmallVGG(nn.Module):
    """[conv-bn-relu, maxpool] x4 on 32x32 -> (C, 2, 2), flatten, Linear-ReLU-Linear."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 64,
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [conv_bn_relu(cin, w), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        spatial = 32 // 2 ** len(widths)
        self.fc1 = nn.Linear(cin * spatial * spatial, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))


def vgg() -> SmallVGG:
    """Seeded small VGG, eval mode (input (1, 3, 32, 32); flatten of 64x2x2)."""
    torch.manual_seed(0)
    return finalize(SmallVGG())

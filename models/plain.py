"""PlainCNN: the simplest chain-coupled CNN.

Why it exists: every coupling here is a straight producer -> consumer chain
(conv -> bn -> relu -> conv ...), plus a maxpool (channel-preserving op),
global average pool + flatten (spatial size 1, so flatten -> Linear is a
1:1 channel map) and a final Linear. It is the baseline every pruner must
handle before anything with residuals or concatenations.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainCNN(nn.Module):
    """conv-bn-relu x3 with a maxpool after the first, GAP, flatten, Linear."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64),
                 num_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.block1 = conv_bn_relu(in_channels, w1)
        self.pool = nn.MaxPool2d(2)
        self.block2 = conv_bn_relu(w1, w2)
        self.block3 = conv_bn_relu(w2, w3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.pool(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def plain_cnn() -> PlainCNN:
    """Seeded PlainCNN, eval mode (input (1, 3, 32, 32))."""
    torch.manual_seed(0)
    return finalize(PlainCNN())

"""ShuffleNet-style unit: grouped 1x1 convs around a channel shuffle, and a depthwise 3x3.

Why it exists: the channel shuffle is ``view(n, g, c/g, h, w) → transpose(1, 2) → view(n, c, h, w)``, the
permutation pruners most often get wrong. Pruning must remove the same position of every shuffle group (or
whole groups), and the grouped convs only allow whole groups to go.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.expand = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.project = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.expand(x)))
        y = channel_shuffle(y, self.groups)
        y = self.bn3(self.project(self.bn2(self.dw(y))))
        return torch.relu(x + y)


class ShuffleNetLike(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(width), ShuffleUnit(width))
        self.mid = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.shuffle_plain = 4
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.units(self.stem(x)))
        x = channel_shuffle(x, self.shuffle_plain)  # a shuffle between dense convs: prunable as a permutation
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def shufflenet_unit() -> ShuffleNetLike:
    torch.manual_seed(0)
    return finalize(ShuffleNetLike())

"""Grouped conv + channel split: group and slice coupling.

Why it exists:
* A ResNeXt-style grouped 3x3 conv (``groups=4``, not depthwise) ties its
  input and output channels group-wise: pruning must keep each group's width
  equal (or remove whole groups), and the producer of its input is coupled
  to the group structure.
* ``torch.split`` with unequal sizes hands two channel ranges of one tensor
  to different convs; the pieces come back via ``torch.cat`` (offset
  coupling) and a residual ``+`` (same-index coupling).
* ``torch.chunk`` into two equal halves whose outputs are added together
  couples channel ``i`` of one half with channel ``i`` of the other.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


def _cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResNeXtBlock(nn.Module):
    """1x1 reduce -> grouped 3x3 (groups=4) -> 1x1 expand, identity residual add."""

    def __init__(self, channels: int, mid: int, groups: int = 4) -> None:
        super().__init__()
        self.reduce = _cbr(channels, mid, 1)
        self.grouped = _cbr(mid, mid, 3, groups=groups)
        self.expand = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False),
                                    nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.expand(self.grouped(self.reduce(x))))


class SplitBlock(nn.Module):
    """Split 32 channels as [12, 20]; conv each; cat back (32) and add the input."""

    def __init__(self, channels: int = 32, first: int = 12) -> None:
        super().__init__()
        self.sizes = [first, channels - first]
        self.conv_a = _cbr(first, first, 3)
        self.conv_b = _cbr(channels - first, channels - first, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, self.sizes, dim=1)
        return torch.cat([self.conv_a(a), self.conv_b(b)], 1) + x


class ChunkBlock(nn.Module):
    """Chunk into two halves, a different conv on each, then add the halves."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        half = channels // 2
        self.conv_a = _cbr(half, half, 3)
        self.conv_b = _cbr(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(x, 2, dim=1)
        return self.conv_a(a) + self.conv_b(b)


class GroupedSplitNet(nn.Module):
    """Stem, ResNeXt block, split block, chunk block, GAP, Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width, 3)
        self.resnext = ResNeXtBlock(width, mid=16, groups=4)
        self.split = SplitBlock(width, first=12)
        self.chunk = ChunkBlock(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.chunk(self.split(self.resnext(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def grouped_split() -> GroupedSplitNet:
    """Seeded grouped-conv / split / chunk net, eval mode (input (1, 3, 32, 32))."""
    torch.manual_seed(0)
    return finalize(GroupedSplitNet())

"""Inception-style blocks: multi-branch concatenation coupling.

Why it exists: four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3;
3x3 maxpool -> 1x1 pool-proj) all read the same input and are concatenated
on channels. The shared input fans out to four consumers, the branches have
internal chains of their own, and the concat output is consumed at four
offsets by the next block's branches. The pool branch passes through a
channel-preserving MaxPool before its projection.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InceptionBlock(nn.Module):
    """1x1 | 1x1->3x3 | 1x1->3x3->3x3 ("5x5") | maxpool->1x1, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branch1 = _cbr(cin, c1, 1)
        self.branch3 = nn.Sequential(_cbr(cin, c3r, 1), _cbr(c3r, c3, 3))
        self.branch5 = nn.Sequential(_cbr(cin, c5r, 1), _cbr(c5r, c5, 3), _cbr(c5, c5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         _cbr(cin, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1
        )


class InceptionNet(nn.Module):
    """Stem, two Inception blocks (maxpool between), GAP, Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 32, 3)
        self.block1 = InceptionBlock(32, 8, 8, 16, 4, 8, 8)  # -> 40 channels
        self.pool = nn.MaxPool2d(2)
        self.block2 = InceptionBlock(self.block1.out_channels, 16, 16, 24, 8, 12, 12)  # -> 64
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.block2.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.stem(x))
        x = self.block2(self.pool(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def inception_block() -> InceptionNet:
    """Seeded two-block Inception net, eval mode (input (1, 3, 32, 32))."""
    torch.manual_seed(0)
    return finalize(InceptionNet())

"""MobileNetV2-style network: depthwise + residual coupling.

Why it exists: a depthwise conv (``groups == channels``) couples its input
and output channels 1:1, so the 1x1 expand conv, the depthwise conv and its
BNs form one group that is pruned together. Inverted residual blocks with
stride 1 and equal widths add a residual coupling across the (linear,
no-activation) 1x1 projections. Uses ReLU6 (Clip in ONNX).
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear project; add if stride 1 and cin == cout."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:  # static (set at construction), fx-traceable
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Small(nn.Module):
    """Stem, a handful of inverted residual blocks, 1x1 head conv, GAP, Linear."""

    # (expand, out_channels, num_blocks, first_stride)
    CONFIG: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (2, 24, 2, 2),
        (2, 32, 2, 2),
    )

    def __init__(self, num_classes: int = 10, in_channels: int = 3, stem: int = 16,
                 head: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3)]
        cin = stem
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.fc(torch.flatten(x, 1))


def mobilenet_v2() -> MobileNetV2Small:
    """Seeded small MobileNetV2, eval mode (input (1, 3, 32, 32))."""
    torch.manual_seed(0)
    return finalize(MobileNetV2Small())

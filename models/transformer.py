"""Transformer MLP blocks: Linear coupling on the last axis of a 3-D tensor.

Why it exists: activations are (batch, tokens, dim), so Linear layers act on
the last axis (MatMul + Add in ONNX rather than Gemm). Inside a block the
hidden ``4*dim`` features couple fc1's output with fc2's input through GELU;
``dim`` itself is coupled across the LayerNorms, every residual add and the
head, which tests that a pruner treats the residual stream as one group.
The token-mean reduces a non-channel axis.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


class MLPBlock(nn.Module):
    """x + fc2(gelu(fc1(layernorm(x))))."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class TransformerMLP(nn.Module):
    """Two MLP blocks, mean over tokens, Linear head."""

    def __init__(self, dim: int = 32, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[MLPBlock(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=1))


def transformer_mlp() -> TransformerMLP:
    """Seeded transformer-MLP stack, eval mode (input (1, 8, 32))."""
    torch.manual_seed(0)
    return finalize(TransformerMLP())

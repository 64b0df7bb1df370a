"""ViT-style encoder blocks with hand-written multi-head attention.

Why they exist: attention splits the embedding into heads with ``reshape(b, t, h, d)`` and ``transpose``,
multiplies Q by Kᵀ per head, and merges heads back. Heads can only be removed whole (in Q, K and V and the
output projection together); the embedding itself is frozen by the LayerNorms; the MLP hidden size is free.

``packed_attention`` is the Swin / timm layout: one ``qkv`` Linear whose 3·C outputs are reshaped to
``(b, t, 3, heads, head_dim)`` and permuted, so a head is the middle digit of the packed axis (neither its
outer nor its inner factor), plus a learned per-head bias on the attention logits (Swin's relative position
bias).
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj(y)


class PackedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Parameter(0.1 * torch.randn(heads, tokens, tokens))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5 + self.bias, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, packed_tokens: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PackedAttention(dim, heads, packed_tokens) if packed_tokens else Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2, num_classes: int = 10, packed_tokens: int = 0) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[EncoderBlock(dim, packed_tokens=packed_tokens) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=1))


def attention_block() -> TinyViT:
    torch.manual_seed(0)
    return finalize(TinyViT())


def packed_attention() -> TinyViT:
    torch.manual_seed(0)
    return finalize(TinyViT(packed_tokens=8))

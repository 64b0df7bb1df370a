"""Small transformers of the families people prune, written in plain torch the way their reference code is, so
the residual (hidden) width is coupled through every normalisation, embedding and residual add:

* ``bert_like``: token + position embeddings, post-norm encoder layers (LayerNorm), multi-head attention, GELU MLP,
  a classifier on the first token;
* ``gpt2_like``: pre-norm decoder layers (LayerNorm), causal attention, the LM head tied to the token embedding;
* ``llama_like``: RMSNorm written as ``x · rsqrt(mean(x²) + ε) · w`` (as Hugging Face's Llama does), grouped-query
  attention (4 query heads over 2 KV heads, ``repeat_kv`` as expand + reshape), rotary embeddings on the head
  dimension, a gated MLP (``down(silu(gate(x)) · up(x))``), an untied LM head;
* ``vit_like``: a patch-embedding conv, a class token and position embeddings, pre-norm blocks, a head on the class
  token;
* ``convnext_like``: ConvNeXt blocks (7×7 depthwise conv, channels-last LayerNorm, MLP, layer scale) and
  ConvNeXt-V2's global response normalisation.

Every builder is seeded and returns the model in eval mode with randomised norm affines; ``TRANSFORMER_MODELS``
gives each with an example input (token ids or an image).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.common import finalize

VOCAB, DIM, SEQ = 64, 32, 8


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim).uniform_(0.5, 1.5))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Hugging Face's ``repeat_kv``: each KV head once per query head of its group (sizes read off the tensor)."""
    b, kv_heads, t, d = x.shape
    return x[:, :, None].expand(b, kv_heads, groups, t, d).reshape(b, kv_heads * groups, t, d)


class SelfAttention(nn.Module):
    """``heads`` query heads over ``kv_heads`` key / value heads; rotary embeddings when ``rope``."""

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, *, causal: bool = False,
                 rope: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(heads * self.head_dim, dim, bias=bias)
        self.causal, self.rope = causal, rope

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        t, d = x.shape[-2], self.head_dim
        freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        angles = torch.arange(t, dtype=torch.float32)[:, None] * freq[None]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        half = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
        return x * cos + half * sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = self.rotate(q), self.rotate(k)
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        att = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if self.causal:
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, -1)
        return self.o(y)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, gated: bool = False) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=not gated)
        self.gate = nn.Linear(dim, hidden, bias=False) if gated else None
        self.down = nn.Linear(hidden, dim, bias=not gated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm (``x + f(norm(x))``) or post-norm (``norm(x + f(x))``) transformer layer."""

    def __init__(self, dim: int, heads: int, *, kv_heads: int | None = None, pre: bool = True, rms: bool = False,
                 causal: bool = False, rope: bool = False, gated: bool = False) -> None:
        super().__init__()
        norm = (lambda: RMSNorm(dim)) if rms else (lambda: nn.LayerNorm(dim))
        self.norm1, self.norm2, self.pre = norm(), norm(), pre
        self.attn = SelfAttention(dim, heads, kv_heads, causal=causal, rope=rope, bias=not rms)
        self.mlp = MLP(dim, 2 * dim, gated=gated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class BertLike(nn.Module):
    def __init__(self, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM)
        self.positions = nn.Parameter(0.1 * torch.randn(1, SEQ, DIM))
        self.norm = nn.LayerNorm(DIM)
        self.layers = nn.Sequential(*[Block(DIM, 4, pre=False) for _ in range(layers)])
        self.classifier = nn.Linear(DIM, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.norm(self.tokens(ids) + self.positions))
        return self.classifier(x[:, 0])


class GPT2Like(nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM)
        self.positions = nn.Embedding(SEQ, DIM)
        self.layers = nn.Sequential(*[Block(DIM, 4, causal=True) for _ in range(layers)])
        self.norm = nn.LayerNorm(DIM)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        return self.norm(self.layers(x)) @ self.tokens.weight.t()  # the LM head tied to the token embedding


class LlamaLike(nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.Sequential(*[Block(DIM, 4, kv_heads=2, rms=True, causal=True, rope=True, gated=True)
                                      for _ in range(layers)])
        self.norm = RMSNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.layers(self.tokens(ids))))


class ViTLike(nn.Module):
    def __init__(self, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, DIM, 8, stride=8)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, DIM))
        self.positions = nn.Parameter(0.1 * torch.randn(1, 17, DIM))
        self.layers = nn.Sequential(*[Block(DIM, 4) for _ in range(layers)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patches(image).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.positions
        return self.head(self.norm(self.layers(x))[:, 0])


class GRN(nn.Module):
    """ConvNeXt-V2's global response normalisation (channels last)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(0.1 * torch.randn(1, 1, 1, dim))
        self.beta = nn.Parameter(0.1 * torch.randn(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sqrt((x * x).sum(dim=(1, 2), keepdim=True))
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, grn: bool = False) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim) if grn else None
        self.down = nn.Linear(4 * dim, dim)
        self.scale = nn.Parameter(torch.empty(dim).uniform_(0.5, 1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.up(self.norm(self.dw(x).permute(0, 2, 3, 1))))
        if self.grn is not None:
            y = self.grn(y)
        return x + (self.scale * self.down(y)).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, DIM, 4, stride=4)
        self.blocks = nn.Sequential(ConvNeXtBlock(DIM), ConvNeXtBlock(DIM, grn=True))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image)).mean(dim=(2, 3))
        return self.head(self.norm(x))


def seeded(cls: type[nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return finalize(cls())

    build.__name__ = cls.__name__
    return build


def token_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(0))


def image() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class TransformerSpec:
    name: str
    build: Callable[[], nn.Module]
    example: Callable[[], torch.Tensor]
    description: str


TRANSFORMER_MODELS: dict[str, TransformerSpec] = {s.name: s for s in [
    TransformerSpec("bert_like", seeded(BertLike), token_ids, "post-norm encoder, LayerNorm, embeddings, classifier"),
    TransformerSpec("gpt2_like", seeded(GPT2Like), token_ids, "pre-norm causal decoder, LM head tied to the embedding"),
    TransformerSpec("llama_like", seeded(LlamaLike), token_ids, "RMSNorm, GQA 4/2 heads, RoPE, gated MLP"),
    TransformerSpec("vit_like", seeded(ViTLike), image, "patch conv, class token, pre-norm blocks"),
    TransformerSpec("convnext_like", seeded(ConvNeXtLike), image, "depthwise 7x7, channels-last LayerNorm, GRN"),
]}

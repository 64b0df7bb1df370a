"""Registry of reference models for tests and benchmarks.

``REFERENCE_MODELS`` are small (32x32 or (1, 8, 32) inputs, export + ORT
inference well under a second each), one per structural coupling pattern.
``BENCHMARK_MODELS`` holds full-size models (ResNet-50) for benchmarks only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.attention import attention_block, packed_attention
from models.densenet import densenet_block
from models.grouped import grouped_split
from models.inception import inception_block
from models.mobilenet import mobilenet_v2
from models.plain import plain_cnn
from models.recurrent import gru_classifier, lstm_classifier
from models.resnet import resnet50, resnet_basic, resnet_bottleneck
from models.shufflenet import shufflenet_unit
from models.transformer import transformer_mlp
from models.vgg import vgg


@dataclass(frozen=True)
class ModelSpec:
    """A named model builder with its static input shape (batch included)."""

    name: str
    build: Callable[[], nn.Module]  # seeded, returns the model in eval mode
    input_shape: tuple[int, ...]
    description: str


_IMG = (1, 3, 32, 32)

REFERENCE_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("plain_cnn", plain_cnn, _IMG,
                  "conv-bn-relu chain with maxpool, GAP, flatten, Linear"),
        ModelSpec("resnet_basic", resnet_basic, _IMG,
                  "resnet8: BasicBlocks, identity and 1x1-projection residual adds"),
        ModelSpec("resnet_bottleneck", resnet_bottleneck, _IMG,
                  "bottleneck ResNet (layers (1, 1), width 16), expansion 4, projections"),
        ModelSpec("vgg", vgg, _IMG,
                  "small VGG; flatten of a 64x2x2 map -> Linear (block map) -> ReLU -> Linear"),
        ModelSpec("mobilenet_v2", mobilenet_v2, _IMG,
                  "inverted residuals: 1x1 expand, depthwise 3x3, linear 1x1 project, ReLU6"),
        ModelSpec("densenet_block", densenet_block, _IMG,
                  "dense block: BN-ReLU-conv, torch.cat([x, new]) growth, 1x1 transition"),
        ModelSpec("inception_block", inception_block, _IMG,
                  "two Inception blocks: 1x1 | 3x3 | 3x3x2 | pool-proj branches concatenated"),
        ModelSpec("grouped_split", grouped_split, _IMG,
                  "ResNeXt grouped conv (groups=4), unequal split -> cat + add, chunk -> add"),
        ModelSpec("transformer_mlp", transformer_mlp, (1, 8, 32),
                  "LayerNorm-Linear-GELU-Linear residual MLP blocks on (B, T, D), token mean"),
        ModelSpec("shufflenet_unit", shufflenet_unit, _IMG,
                  "ShuffleNet-style units (grouped 1x1, channel shuffle, depthwise) and a shuffle between dense convs"),
        ModelSpec("attention_block", attention_block, (1, 8, 32),
                  "ViT-style blocks: hand-written multi-head attention (heads removed whole) and MLP"),
        ModelSpec("packed_attention", packed_attention, (1, 8, 32),
                  "Swin / timm-style blocks: one qkv Linear split 3 x heads x head_dim, per-head logit bias"),
        ModelSpec("lstm_classifier", lstm_classifier, (2, 7, 6),
                  "2-layer bidirectional LSTM (batch_first) between Linear layers"),
        ModelSpec("gru_classifier", gru_classifier, (2, 7, 6),
                  "2-layer GRU (batch_first) between Linear layers"),
    ]
}

BENCHMARK_MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec("resnet50", resnet50, (1, 3, 224, 224),
                          "ImageNet bottleneck ResNet-50 (3, 4, 6, 3), ~25.6M params"),
}

"""Small random-init vision models of the libraries people prune, built with code (no downloads): timm
(``create_model(name, pretrained=False)``) and ultralytics (YOLOv8n from its yaml). Both are optional and need
torchvision, i.e. torch 2.14.1: the ``vision`` extra, in its own venv like ``zoo``. Every builder returns
``(model, example_inputs)`` with the model in eval mode.

Random normalisation statistics and affine parameters (``liven_norms``): as built, every BatchNorm has mean 0,
variance 1, γ 1, β 0 and every LayerNorm γ 1, β 0, so a channel permuted or mis-sliced by the surgery would go
unseen by the oracle; with per-channel values it cannot. timm's transformer weights are re-drawn at std
1/sqrt(fan-in) (its 0.02 init makes the outputs vanish through the random layers); YOLO keeps its own init, above
all the DFL's fixed integral kernel (``arange(16)``), which is what makes its box decoding a box decoding.

Ultralytics is kept offline before it is imported: ``YOLO_OFFLINE`` (no GitHub / hub checks, no font or asset
download), ``YOLO_VERBOSE=False``, and its settings file in a temporary folder unless ``YOLO_CONFIG_DIR`` is set.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from models.hf import liven

SIZE = 64  # image side of every example input: small keeps a prune under a minute


def image(size: int = SIZE) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def liven_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Per-channel random statistics and affine parameters for every BatchNorm / LayerNorm / GroupNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                for p, centre in ((getattr(m, "weight", None), 1.0), (getattr(m, "bias", None), 0.0)):
                    if p is not None:
                        p.copy_(centre + 0.2 * torch.randn(p.shape, generator=g))
    return model


def timm_model(name: str, *, redraw: bool = False, **kwargs) -> Callable[[], tuple[nn.Module, tuple]]:
    def build():
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
        return (liven(model) if redraw else model), (image(),)
    return build


def offline_ultralytics() -> None:
    """Environment that keeps ultralytics from reaching the network or the user's settings (set before import)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "graphprune-ultralytics"))


def yolov8n():
    """YOLOv8n's ``DetectionModel`` from the yaml that ships with ultralytics (80 classes, random weights); in eval
    mode its forward decodes boxes (DFL, anchors, strides) and returns ``(predictions, raw head outputs)``."""
    offline_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8n.yaml", verbose=False), (image(),)


VISION_MODELS: dict[str, Callable[[], tuple[nn.Module, tuple]]] = {
    "resnet18": timm_model("resnet18"),
    "mobilenetv3_small_100": timm_model("mobilenetv3_small_100"),
    "convnext_atto": timm_model("convnext_atto"),
    "vit_tiny": timm_model("vit_tiny_patch16_224", redraw=True, img_size=SIZE),
    "yolov8n": yolov8n,
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """``(model, example_inputs)`` of ``name``, seeded, eval mode."""
    torch.manual_seed(seed)
    model, inputs = VISION_MODELS[name]()
    return liven_norms(model, seed).eval(), inputs

"""timm and ultralytics models (built with code, random weights: models/vision.py) come back from ``graphprune.prune``
as smaller modules of their own class that run and verify against the masked original, with the outputs of the
original's shapes; YOLOv8n still runs its predict path (box decoding from anchors recomputed at another image size).

timm and ultralytics need torchvision, i.e. torch 2.14.1: the ``vision`` extra in its own venv (``/work/zoo-venv``);
in the default venv this file is skipped."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("ultralytics")

from torch import fx  # noqa: E402

import graphprune  # noqa: E402
from graphprune.torch.api import prune_module  # noqa: E402
from models.vision import build  # noqa: E402


def shapes(value) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a (nested) output, in order."""
    out: list[tuple[int, ...]] = []
    fx.node.map_aggregate(value, lambda v: out.append(tuple(v.shape)) if isinstance(v, torch.Tensor) else v)
    return out


def run(model, *inputs):
    with torch.no_grad():
        return model.eval()(*inputs)


@pytest.mark.parametrize("name, capture", [("resnet18", "torch.fx"), ("mobilenetv3_small_100", "torch.fx"),
                                           ("convnext_atto", "torch.fx"), ("vit_tiny", "torch.fx"),
                                           ("yolov8n", "torch.export")])
def test_prunes_to_a_smaller_module_of_its_class_that_verifies(name, capture):
    model, inputs = build(name)
    before = shapes(run(model, *inputs))
    result = graphprune.prune(model, example_inputs=inputs, ratio=0.5)
    report = result.report
    assert report.extra["frontend"] == capture
    assert report.verification.ok and report.verification.checks["masked_original"] == "ok"
    assert type(result.model) is type(model)
    assert report.after.params < 0.6 * report.before.params
    assert sum(p.numel() for p in result.model.parameters()) == report.after.params
    assert shapes(run(result.model, *inputs)) == before


def test_yolo_keeps_its_predict_path_and_its_csp_blocks_stay_whole():
    model, inputs = build("yolov8n")
    result = graphprune.prune(model, example_inputs=inputs, ratio=0.5)
    small, detect = result.model, result.model.model[-1]
    assert not any("Unknown" in why for g in result.report.groups for why in g.frozen_because)
    x = torch.randn(1, 3, 96, 96)  # another size: the anchors are recomputed, nothing was baked
    y, raw = run(small, x)
    assert y.shape == run(model, x)[0].shape == (1, 4 + detect.nc, 12 * 12 + 6 * 6 + 3 * 3)
    assert torch.isfinite(y).all() and isinstance(detect.anchors, torch.Tensor)
    c2f = small.model[2]  # C2f: cv1's output is chunked in two halves, which must stay equal
    assert c2f.cv1.conv.out_channels == 2 * c2f.c < 2 * model.model[2].c
    x = torch.randn(1, c2f.cv1.conv.in_channels, 8, 8)
    with torch.no_grad():  # forward_split, which some ultralytics exports run, computes what forward does
        assert torch.allclose(c2f.forward_split(x), c2f(x), atol=1e-6)


def test_vit_from_torch_export_loses_whole_heads_and_its_attention_attributes_follow():
    model, inputs = build("vit_tiny")
    result = prune_module(model, inputs, ratio=0.5, budget="channels", round_to=1, capture="export")
    assert result.report.verification.ok and type(result.model) is type(model)
    attn, old = result.model.blocks[0].attn, model.blocks[0].attn
    assert attn.head_dim == old.head_dim  # heads go whole
    assert attn.num_heads < old.num_heads
    assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.attn_dim
    assert attn.proj.in_features == attn.attn_dim

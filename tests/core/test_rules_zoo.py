"""The patterns of the torchvision / ONNX model zoo, each as a small hand-built graph (see test_rules.py).

Every test prunes with full verification (the masked-original oracle) and asserts what the rule must achieve:
which channels went, which stayed frozen and why, which attribute the emitter rewrote. A broken coupling makes
the oracle fail; a rule that freezes too much fails the "removed" assertions. The full zoo runs in
``benchmarks/zoo_coverage.py`` (torchvision needs its own environment); the onnx package's light zoo runs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_builder import G

import graphprune
from graphprune.channels.rules import Space

SHAPE = (1, 4, 8, 8)


def prune_ok(model, **kw):
    """Prune with full verification; ``--ratio`` of each group's channels (``budget="channels"``), since these tests
    assert per-group kept counts."""
    result = graphprune.prune(model, ratio=kw.pop("ratio", 0.5), round_to=kw.pop("round_to", 1),
                              budget=kw.pop("budget", "channels"), **kw)
    assert result.report.verification.ok, result.report.verification.failure
    return result


def kept(result, tensor: str, axis: int) -> int:
    k = result.plan.kept(Space(tensor, axis))
    return len(k) if k is not None else result.channels.graph.shape(tensor)[axis]


def test_squeeze_excitation_with_hardsigmoid_gate():
    """MobileNetV3 / EfficientNet SE: GlobalAveragePool → conv → relu → conv → HardSigmoid → Mul(x, gate)."""
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 16)])
    s = g.op("GlobalAveragePool", [x])
    s = g.op("HardSigmoid", [g.conv(g.op("Relu", [g.conv(s, 16, 4, k=1)]), 4, 16, k=1)], alpha=1 / 6, beta=0.5)
    y = g.op("Mul", [x, s])
    g.head(g.conv(y, 16, 8), 8)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, x, 1) == 8  # the gated channels, with the gate's producing conv
    assert kept(r, s, 1) == 8
    assert r.report.groups_pruned >= 3  # SE's squeezed width is its own group


def test_efficientnet_mbconv_silu_se_and_residual():
    """EfficientNet MBConv: expand 1x1 → depthwise → SiLU (x·sigmoid x) → SE → project 1x1 → + residual."""
    g = G()
    stem = g.conv("input", 4, 8)
    e = g.conv(stem, 8, 24, k=1)
    e = g.op("Mul", [e, g.op("Sigmoid", [e])])
    d = g.conv(e, 24, 24, group=24)
    d = g.op("Mul", [d, g.op("Sigmoid", [d])])
    s = g.op("GlobalAveragePool", [d])
    s = g.conv(s, 24, 6, k=1)
    s = g.op("Mul", [s, g.op("Sigmoid", [s])])
    s = g.op("Sigmoid", [g.conv(s, 6, 24, k=1)])
    p = g.conv(g.op("Mul", [d, s]), 24, 8, k=1)
    y = g.op("Add", [stem, p])
    g.head(y, 8)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, e, 1) == 12 and kept(r, d, 1) == 12  # expanded width through the depthwise conv
    dw = [n for n in r.model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert [a.i for a in dw[0].attribute if a.name == "group"] == [12]
    assert kept(r, stem, 1) == 4  # the residual stream too


def test_convnext_block_layernorm_over_channels_renormalises_the_stream_and_prunes_the_mlp():
    """ConvNeXt: dwconv → permute → LayerNorm(last axis) → Linear → GELU → Linear → layer scale → permute → + x.
    LayerNorm normalises the channels: the residual stream shrinks with the MLP hidden, and the pruned LayerNorm
    (statistics over the kept channels) is verified against the renormalised oracle."""
    g = G(opset=20)
    x = g.conv("input", 4, 8)
    d = g.conv(x, 8, 8, k=7, group=8)
    t = g.op("Transpose", [d], perm=[0, 2, 3, 1])
    n = g.op("LayerNormalization", [t, g.const(np.linspace(0.5, 1.5, 8)), g.rand(8)], axis=-1)
    h = g.op("Gelu", [g.op("Add", [g.op("MatMul", [n, g.rand(8, 32)]), g.rand(32)])])
    o = g.op("Add", [g.op("MatMul", [h, g.rand(32, 8)]), g.rand(8)])
    o = g.op("Mul", [o, g.const(np.full(8, 0.1))])
    y = g.op("Add", [x, g.op("Transpose", [o], perm=[0, 3, 1, 2])])
    g.head(y, 8)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, h, 3) == 16  # MLP hidden halved
    stream = r.channels.group(Space(x, 1))
    assert stream.prunable and kept(r, x, 1) == 4
    assert [x.kind for x in r.plan.renormalised] == ["LayerNormalization"]


def test_regnet_grouped_bottleneck():
    """RegNet / ResNeXt: 1x1 → grouped 3x3 (group width 4) → 1x1, with a projection shortcut: whole groups go."""
    g = G()
    x = g.conv("input", 4, 8)
    a = g.op("Relu", [g.conv(x, 8, 16, k=1)])
    b = g.op("Relu", [g.conv(a, 16, 16, group=4)])
    c = g.conv(b, 16, 12, k=1)
    y = g.op("Relu", [g.op("Add", [c, g.conv(x, 8, 12, k=1)])])
    g.head(y, 12)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, a, 1) == 8 and kept(r, b, 1) == 8
    groups = [a.i for n in r.model.graph.node for a in n.attribute if n.op_type == "Conv" and a.name == "group"]
    assert 2 in groups  # 4 groups of 4 → 2 kept


def test_inception_branches_with_pool_branch_concat():
    """GoogLeNet / Inception: 1x1, 1x1→3x3, 1x1→5x5 and maxpool→1x1 branches concatenated."""
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 8)])
    b1 = g.conv(x, 8, 4, k=1)
    b2 = g.conv(g.op("Relu", [g.conv(x, 8, 6, k=1)]), 6, 8)
    b3 = g.conv(g.op("Relu", [g.conv(x, 8, 2, k=1)]), 2, 4, k=5)
    p = g.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    b4 = g.conv(p, 8, 4, k=1)
    y = g.op("Concat", [b1, b2, b3, b4], axis=1)
    g.head(g.conv(y, 20, 8), 8)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert all(kept(r, b, 1) < n for b, n in ((b1, 4), (b2, 8), (b3, 4), (b4, 4)))  # every branch pruned
    assert kept(r, y, 1) == sum(kept(r, b, 1) for b in (b1, b2, b3, b4))  # the concat follows
    assert kept(r, x, 1) == 4  # the shared input of all four branches


def shufflenet_v2_unit(g: G, x: str, c: int) -> str:
    """torchvision ShuffleNetV2 stride-1 unit: chunk → (identity, 1x1 → dw 3x3 → 1x1) → concat → shuffle(2)."""
    half = c // 2
    left, right = g.op("Split", [x, g.const([half, half], np.int64)], n_out=2, axis=1)
    r = g.op("Relu", [g.conv(right, half, half, k=1)])
    r = g.conv(r, half, half, group=half)
    r = g.op("Relu", [g.conv(r, half, half, k=1)])
    y = g.op("Concat", [left, r], axis=1)
    y = g.op("Reshape", [y, g.const([1, 2, half, 8, 8], np.int64)])
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    return g.op("Reshape", [y, g.const([1, c, 8, 8], np.int64)])


def test_shufflenet_v2_units_channel_shuffle_as_permutation():
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 16)])
    y = shufflenet_v2_unit(g, shufflenet_v2_unit(g, x, 16), 16)
    g.head(g.conv(y, 16, 8), 8)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert r.report.units_removed > 0
    assert kept(r, x, 1) < 16  # the stream through two shuffles is pruned (as a permutation), not frozen


def mha_block(g: G, x: str, t: int, d: int, heads: int) -> str:
    """torchvision nn.MultiheadAttention as the legacy exporter writes it (batch 1, sequence-first inside)."""
    hd = d // heads
    xt = g.op("Transpose", [x], perm=[1, 0, 2])  # (t, 1, d)
    qkv = g.op("Add", [g.rand(3 * d), g.op("MatMul", [xt, g.rand(d, 3 * d)])])
    qkv = g.op("Reshape", [qkv, g.const([t, 1, 3, d], np.int64)])
    qkv = g.op("Squeeze", [g.op("Transpose", [g.op("Unsqueeze", [qkv, g.const([0], np.int64)])], perm=[3, 1, 2, 0, 4]),
                           g.const([3], np.int64)])  # (3, t, 1, d)
    parts = []
    for i in range(3):
        p = g.op("Gather", [qkv, g.const(i, np.int64)], axis=0)  # (t, 1, d)
        p = g.op("Transpose", [g.op("Reshape", [p, g.const([t, heads, hd], np.int64)])], perm=[1, 0, 2])
        parts.append(g.op("Reshape", [p, g.const([1, heads, t, hd], np.int64)]))
    q, k, v = parts
    s = g.op("MatMul", [g.op("Mul", [q, g.const([hd ** -0.25])]),
                        g.op("Mul", [g.op("Transpose", [k], perm=[0, 1, 3, 2]), g.const([hd ** -0.25])])])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])  # (1, heads, t, hd)
    a = g.op("Reshape", [g.op("Transpose", [a], perm=[2, 0, 1, 3]), g.const([t, d], np.int64)])
    o = g.op("Gemm", [a, g.rand(d, d), g.rand(d)], transB=1)
    return g.op("Transpose", [g.op("Reshape", [o, g.const([t, 1, d], np.int64)])], perm=[1, 0, 2])


def test_torchvision_multihead_attention_prunes_whole_heads():
    t, d, heads = 5, 16, 4
    g = G()
    x = g.op("MatMul", ["input", g.rand(6, d)])  # (1, t, d) embedding
    y = g.op("Add", [x, mha_block(g, x, t, d, heads)])
    out = g.op("ReduceMean", [y], axes=[1], keepdims=0)
    g.nodes.append(helper.make_node("Gemm", [out, g.rand(5, d), g.rand(5)], ["output"], name="fc", transB=1))
    r = prune_ok(g.model((1, t, 6), (1, 5)))
    head_groups = [gr for gr in r.channels.prunable if any(s.tensor.startswith("reshape") and s.axis == 1
                                                            and r.channels.graph.shape(s.tensor) == (1, heads, t, d // heads)
                                                            for s in gr.spaces)]
    assert head_groups and head_groups[0].n_units == heads  # units are whole heads
    assert r.report.units_removed >= heads // 2


def test_vit_mlp_hidden_between_layernorms():
    g = G(opset=20)
    x = g.op("MatMul", ["input", g.rand(6, 16)])
    n = g.op("LayerNormalization", [x, g.const(np.ones(16)), g.rand(16)], axis=-1)
    h = g.op("Gelu", [g.op("Add", [g.op("MatMul", [n, g.rand(16, 64)]), g.rand(64)])])
    y = g.op("Add", [x, g.op("Add", [g.op("MatMul", [h, g.rand(64, 16)]), g.rand(16)])])
    out = g.op("ReduceMean", [y, g.const([1], np.int64)], keepdims=0)
    g.nodes.append(helper.make_node("Gemm", [out, g.rand(5, 16), g.rand(5)], ["output"], name="fc", transB=1))
    r = prune_ok(g.model((1, 5, 6), (1, 5)))
    assert kept(r, h, 2) == 32


def test_reshape_with_unknown_output_shape_is_left_alone_by_the_emitter():
    """Swin's shifted windows: a Reshape whose target is computed at run time has no static shape; its rule
    freezes it, and the emitter must not trip over it while pruning the rest."""
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 8)])
    y = g.conv(x, 8, 6)
    dyn = g.op("NonZero", [g.op("Greater", [g.op("ReduceMax", [y], keepdims=0), g.const(1e9)])])  # empty, shape (0, 0)
    count = g.op("Cast", [g.op("ReduceSum", [g.op("Cast", [dyn], to=TensorProto.FLOAT)], keepdims=0)], to=TensorProto.INT64)
    last = g.op("Add", [g.const([8], np.int64), g.op("Reshape", [count, g.const([1], np.int64)])])  # 8 at run time
    n = g.op("Reshape", [y, g.op("Concat", [g.const([1, 6, 8], np.int64), last], axis=0)])
    g.head(n, 6)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, x, 1) == 4


LIGHT = sorted((Path(onnx.__file__).parent / "backend/test/data/light").glob("*.onnx"))
FAST_LIGHT = {"light_squeezenet.onnx", "light_inception_v1.onnx", "light_shufflenet.onnx", "light_densenet121.onnx"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=() if p.name in FAST_LIGHT else pytest.mark.slow, id=p.stem)
                                  for p in LIGHT])
def test_onnx_light_zoo(path):
    """The model-zoo graphs shipped in onnx (IR 3, opset 9, weights as ConstantOfShape): verified pruning."""
    r = graphprune.prune(path, ratio=0.5)
    assert r.report.verification.ok, r.report.verification.failure
    if path.name != "light_shufflenet.onnx":  # its units are grouped convs around a shuffle: see zoo_coverage
        assert r.report.units_removed > 0


def test_ir3_initializers_as_inputs():
    """IR < 4 lists initializers among the graph inputs; the folded model must not keep the old IR version."""
    g = G()
    g.head(g.conv(g.op("Relu", [g.conv("input", 4, 8)]), 8, 6), 6)
    m = g.model(SHAPE, (1, 5))
    m.ir_version = 3
    m.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in m.graph.initializer)
    m.opset_import[0].version = 9
    r = prune_ok(m)
    assert r.report.units_removed > 0


def test_expand_broadcasts_a_per_channel_norm_and_its_shape_is_rewritten():
    """F.normalize's ``x / norm.expand_as(x)`` (Swin v2 attention): channels pass through the Expand, the
    broadcast axes stay, and the emitter writes the new channel count into the shape constant."""
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 8)])  # (1, 8, 8, 8)
    norm = g.op("ReduceL2", [x], axes=[2, 3], keepdims=1)  # (1, 8, 1, 1), opset 17: axes as an attribute
    x = g.op("Div", [x, g.op("Expand", [norm, g.const([1, 8, 8, 8], np.int64)])])
    g.head(g.op("Relu", [g.conv(x, 8, 6)]), 6)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, x, 1) == 4
    shapes = [onnx.numpy_helper.to_array(t).tolist() for t in r.model.graph.initializer if t.name.endswith("::shape")]
    assert shapes == [[1, 4, 8, 8]]


def test_shape_with_start_and_end_folds_to_its_range_only():
    """``Shape(x, start, end)`` (opset 15; the dynamo exporter's RNN initial state for a dynamic batch): folded as
    the whole shape (graphsurgeon ignores start / end), the Expand below would build a rank-6 tensor and the
    folded model would not run."""
    g = G()
    y = g.op("Relu", [g.conv("input", 4, 8)])  # (1, 8, 8, 8)
    lead = g.op("Shape", [y], start=0, end=2)  # [1, 8]
    zeros = g.op("Expand", [g.const(0.0), g.op("Concat", [lead, g.const([8, 8], np.int64)], axis=0)])
    x = g.op("Add", [y, zeros])
    g.head(g.op("Relu", [g.conv(x, 8, 6)]), 6)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    assert kept(r, x, 1) == 4  # the zeros fold to a (1, 8, 8, 8) constant, which loses the same channels


def test_fold_batchnorm_and_noops_post_pass():
    from graphprune.passes import fold as _  # noqa: F401  (passes is the package's passes/)
    from graphprune.emit.fold import fold_model
    from graphprune.verify.compare import verify_same

    g = G()
    x = g.conv("input", 4, 8)
    x = g.op("BatchNormalization", [x, g.const(np.linspace(0.5, 1.5, 8)), g.rand(8), g.rand(8), g.const(np.linspace(0.5, 2, 8))])
    x = g.op("Identity", [g.op("Relu", [x])])
    x = g.op("Dropout", [g.conv(x, 8, 6, bias=False)])
    x = g.op("BatchNormalization", [x, g.const(np.linspace(0.5, 1.5, 6)), g.rand(6), g.rand(6), g.const(np.linspace(0.5, 2, 6))])
    g.head(x, 6)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    folded, stats = fold_model(r.model)
    assert stats == {"batchnorms_folded": 2, "noops_removed": 2}  # the Dropout goes first, so the 2nd BN folds too
    assert not any(n.op_type in ("BatchNormalization", "Identity", "Dropout") for n in folded.graph.node)
    v = verify_same(r.model, folded, r.source.input_shapes, label="equals_unfolded", what="folded - unfolded")
    assert v.ok, v.failure
    assert fold_model(folded)[1] == {"batchnorms_folded": 0, "noops_removed": 0}


def test_fold_option_folds_after_pruning_verified_and_keeps_a_dynamic_batch(tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                        nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    for m in net:
        if isinstance(m, nn.BatchNorm2d):  # not the identity statistics of a fresh layer
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    src = tmp_path / "bn.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), str(src), dynamo=False, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(src)).graph.node) == 2
    r = graphprune.prune(str(src), ratio=0.5, fold=True, input_shapes={"x": (1, 3, 8, 8)})
    assert r.report.verification.ok, r.report.verification.failure
    assert "FoldBatchNorm/equals_unfolded" in r.report.verification.checks
    assert not any(n.op_type == "BatchNormalization" for n in r.model.graph.node)
    assert [p.name for p in r.report.passes][-1] == "FoldBatchNorm" and r.report.units_removed > 0
    assert any("dynamic x[0] kept" in n for n in r.report.notes)  # folding is value-preserving at every size
    v = graphprune.verify_files(str(src), r.save(tmp_path / "small.onnx"))
    assert v.ok, v.failure


def test_shape_arithmetic_that_needs_two_fold_rounds_swin_padding():
    """Swin pads the feature map to a multiple of the window with pads computed from Shape, then reshapes by the
    padded shape: only after one fold (and shape inference) is the Pad output static, so a second round folds
    the Shape after it. Without it, every later shape is unknown and everything after it is frozen."""
    from graphprune.frontends.onnx import fold as fo, proto

    g = G()
    x = g.op("Relu", [g.conv("input", 4, 8)])  # (1, 8, 8, 8)
    w = g.op("Gather", [g.op("Shape", [x]), g.const(3, np.int64)], axis=0)
    pad_r = g.op("Mod", [g.op("Sub", [g.const(4, np.int64), g.op("Mod", [w, g.const(4, np.int64)])]), g.const(4, np.int64)])
    pads = g.op("Concat", [g.const([0] * 7, np.int64), g.op("Reshape", [pad_r, g.const([1], np.int64)])], axis=0)
    p = g.op("Pad", [x, pads])  # (1, 8, 6, 8)
    hw = g.op("Slice", [g.op("Shape", [p]), g.const([2], np.int64), g.const([4], np.int64)])
    r = g.op("Reshape", [p, g.op("Concat", [g.const([1, 8], np.int64), g.op("ReduceProd", [hw], keepdims=1)], axis=0)])
    y = g.op("Reshape", [r, g.const([1, 8, 6, 8], np.int64)])
    g.head(g.conv(y, 8, 6), 6)
    model = g.model((1, 4, 6, 6), (1, 5))
    once = fo.fold(proto.with_input_shapes(model, {"input": (1, 4, 6, 6)}))
    assert any(n.op_type == "Shape" for n in once.graph.node)  # the case needs the second round
    r = prune_ok(model)
    assert not any(n.op == "Shape" for n in r.channels.graph.nodes)
    assert kept(r, x, 1) == 4  # the channels through Pad and both Reshapes are pruned, not frozen

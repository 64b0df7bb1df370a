"""Channel rules, one small hand-built graph per op family: prune at 0.5 and check the masked-original oracle.

Each graph has a conv before and after the op under test, so the op's coupling decides which channels of
both convs go together; a wrong rule makes the emitted model differ from the masked original.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper
from onnx_builder import G

import graphprune
from graphprune.api import inspect
from graphprune.errors import UnsupportedModelError
from graphprune.channels.rules import Space

SHAPE = (1, 4, 8, 8)


def prune_ok(model, **kw):
    result = graphprune.prune(model, ratio=kw.pop("ratio", 0.5), **kw)
    assert result.report.verification.ok, result.report.verification.failure
    return result


def between(make_middle, cmid: int = 8, cout: int = 6, opset: int = 17):
    """input → conv(4→cmid) → middle(x) → conv(c→cout) → head. ``make_middle(g, x) -> (y, c)``."""
    g = G(opset=opset)
    a = g.conv("input", 4, cmid)
    y, c = make_middle(g, a)
    b = g.conv(y, c, cout)
    g.head(b, cout)
    return g.model(SHAPE, (1, 5))


UNARY = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Mish", "Gelu", "Erf", "Softplus",
         "Elu", "Selu", "Abs", "Neg", "Identity", "Dropout"]


@pytest.mark.parametrize("op", UNARY)
def test_unary_ops_pass_channels(op):
    opset = {"Gelu": 20, "Mish": 18}.get(op, 17)
    r = prune_ok(between(lambda g, x: (g.op(op, [x]), 8), opset=opset))
    assert r.report.units_removed >= 4


def test_clip_with_scalar_bounds():
    prune_ok(between(lambda g, x: (g.op("Clip", [x, g.const(0.0), g.const(6.0)]), 8)))


def test_batchnorm_and_instancenorm():
    def bn(g, x):
        y = g.op("BatchNormalization", [x, g.const(np.linspace(0.5, 1.5, 8)), g.rand(8), g.rand(8),
                                        g.const(np.linspace(0.5, 2.0, 8))])
        return g.op("InstanceNormalization", [y, g.const(np.linspace(1, 2, 8)), g.rand(8)]), 8
    r = prune_ok(between(bn))
    assert r.report.units_removed >= 4


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div", "Max", "Min"])
def test_binary_with_per_channel_constant(op):
    def mid(g, x):
        c = g.const(np.linspace(1.0, 2.0, 8).reshape(1, 8, 1, 1))
        return g.op(op, [x, c]), 8
    prune_ok(between(mid))


def test_squeeze_excitation_gate():
    """x · sigmoid(conv(relu(conv(mean_hw(x))))): the gate couples to x's channels; SE's inner width is free."""
    def se(g, x):
        s = g.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
        s = g.op("Relu", [g.conv(s, 8, 3, k=1)])
        s = g.op("Sigmoid", [g.conv(s, 3, 8, k=1)])
        return g.op("Mul", [x, s]), 8
    r = prune_ok(between(se))
    assert r.report.groups_pruned >= 2


def test_where_and_pow_broadcast():
    def mid(g, x):
        cond = g.op("Greater", [x, g.const(0.0)])
        y = g.op("Where", [cond, x, g.op("Pow", [x, g.const(2.0)])])
        return y, 8
    prune_ok(between(mid))


def test_concat_of_two_convs_and_the_input_of_the_next():
    def mid(g, x):
        other = g.conv(x, 8, 5)
        return g.op("Concat", [other, x], axis=1), 13
    r = prune_ok(between(mid))
    assert r.report.units_removed > 0


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_unequal_then_add_back(opset):
    def mid(g, x):
        if opset >= 13:
            a, b = g.op("Split", [x, g.const([3, 5], np.int64)], n_out=2, axis=1)
        else:
            a, b = g.op("Split", [x], n_out=2, axis=1, split=[3, 5])
        return g.op("Concat", [g.conv(a, 3, 3), g.op("Relu", [b])], axis=1), 8
    prune_ok(between(mid, opset=opset))


def test_split_by_num_outputs():
    def mid(g, x):
        a, b = g.op("Split", [x], n_out=2, axis=1, num_outputs=2)
        return g.op("Add", [a, b]), 4
    prune_ok(between(mid, opset=18))


@pytest.mark.parametrize("start,end", [(2, 7), (0, 4), (-5, 100)])
def test_slice_on_channels(start, end):
    def mid(g, x):
        y = g.op("Slice", [x, g.const([start], np.int64), g.const([end], np.int64), g.const([1], np.int64)])
        n = len(range(8)[slice(start, end)])
        return y, n
    prune_ok(between(mid))


def test_slice_with_step_freezes_the_axis():
    def mid(g, x):
        y = g.op("Slice", [x, g.const([0], np.int64), g.const([8], np.int64), g.const([1], np.int64),
                           g.const([2], np.int64)])
        return y, 4
    model = between(mid)
    cg = inspect(model).channels
    slice_node = [n for n in cg.graph.nodes if n.op == "Slice"][0]
    assert cg.group(Space(slice_node.inputs[0], 1)).frozen
    prune_ok(model)


def test_pools_resize_and_pad():
    def mid(g, x):
        y = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        y = g.op("Resize", [y, "", g.const([1, 1, 2, 2])], mode="nearest")
        y = g.op("Pad", [y, g.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)])
        y = g.op("AveragePool", [y], kernel_shape=[3, 3])
        return y, 8
    r = prune_ok(between(mid))
    assert r.report.units_removed >= 4


def test_transpose_and_reshape_roundtrip():
    """NCHW → NHWC → NCHW through Transpose, and a Reshape that splits and merges the channel axis."""
    def mid(g, x):
        t = g.op("Transpose", [x], perm=[0, 2, 3, 1])
        t = g.op("Transpose", [t], perm=[0, 3, 1, 2])
        r = g.op("Reshape", [t, g.const([1, 2, 4, 64], np.int64)])  # C=8 → (2, 4): blocks of 4
        r = g.op("Reshape", [r, g.const([1, 8, 8, 8], np.int64)])
        return r, 8
    prune_ok(between(mid))



def grouped_query_attention():
    """x (1, 8, 16) → 4 query heads over 2 KV heads of 4 (K / V repeated by Unsqueeze → Expand → Reshape, as
    ``repeat_kv``) → attention → o → output. Returns the model and the names of Q's and K's head-axis tensors."""
    g = G()
    def heads(w_out, n):
        y = g.op("Reshape", [g.op("MatMul", ["input", g.rand(16, w_out)]), g.const([1, 8, n, 4], np.int64)])
        return g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (1, n, 8, 4)
    def repeated(t):
        t = g.op("Unsqueeze", [t, g.const([2], np.int64)])
        t = g.op("Expand", [t, g.const([1, 2, 2, 8, 4], np.int64)])
        return g.op("Reshape", [t, g.const([1, 4, 8, 4], np.int64)])
    q, k, v = heads(16, 4), heads(8, 2), heads(8, 2)
    scores = g.op("MatMul", [q, g.op("Transpose", [repeated(k)], perm=[0, 1, 3, 2])])
    y = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), repeated(v)])
    y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), g.const([1, 8, 16], np.int64)])
    g.nodes.append(__import__("onnx").helper.make_node("MatMul", [y, g.rand(16, 16)], ["output"]))
    return g.model((1, 8, 16), (1, 8, 16)), q, k


def test_grouped_query_attention_loses_whole_kv_groups_by_default():
    model, q, k = grouped_query_attention()
    r = prune_ok(model, budget="channels", round_to=1)
    kept_q = r.plan.kept(Space(q, 1))
    assert kept_q is not None and kept_q.tolist() in ([0, 1], [2, 3])  # one KV group with its two query heads
    assert r.plan.kept(Space(k, 1)) is not None  # and the KV head itself
    expand = [n for n in r.channels.graph.nodes if n.op == "Expand"][0]
    assert any("broadcast from a size-1 axis" in why for why in r.channels.group(Space(expand.outputs[0], 2)).reasons(5))


def test_query_heads_go_inside_every_kv_group_and_the_kv_heads_stay():
    """--query-heads: the Expand's copy axis is free and the merge couples through it (mixed radix: head h of
    the merged axis is copy h % 2), so each group loses the same query head; K / V keep both heads."""
    model, q, k = grouped_query_attention()
    r = prune_ok(model, budget="channels", round_to=1, query_heads=True)
    kept_q = r.plan.kept(Space(q, 1))
    assert kept_q is not None and kept_q.tolist() in ([0, 2], [1, 3])  # the same head index in both groups
    assert r.plan.kept(Space(k, 1)) is None  # both KV heads kept
    assert r.plan.meta["query_heads"] is True  # so that graphprune verify analyses the file alike
    k_group = r.channels.group(Space(k, 1))
    assert k_group.frozen and any("query_heads" in why for why in k_group.reasons(5))
    inits = {t.name: t for t in r.model.graph.initializer}
    expands = [numpy_helper.to_array(inits[n.input[1]]).tolist() for n in r.model.graph.node if n.op_type == "Expand"]
    assert len(expands) == 2 and all(e[:3] == [1, 2, 1] for e in expands)  # one copy of each KV head per group


def test_squeeze_unsqueeze():
    def mid(g, x):
        y = g.op("Unsqueeze", [x, g.const([2], np.int64)])
        y = g.op("Squeeze", [y, g.const([2], np.int64)])
        return y, 8
    prune_ok(between(mid))


def test_softmax_over_channels_freezes_them():
    model = between(lambda g, x: (g.op("Softmax", [x], axis=1), 8))
    cg = inspect(model).channels
    node = [n for n in cg.graph.nodes if n.op == "Softmax"][0]
    group = cg.group(Space(node.inputs[0], 1))
    assert group.frozen and any("Softmax" in r for r in group.reasons(5))
    prune_ok(model)


def test_grouped_conv_prunes_whole_groups():
    model = between(lambda g, x: (g.conv(x, 8, 8, group=4), 8))
    r = prune_ok(model)
    conv = [n for n in r.model.graph.node if n.op_type == "Conv" and any(a.name == "group" for a in n.attribute)]
    groups = {a.i for n in conv for a in n.attribute if a.name == "group"}
    assert 2 in groups  # 4 groups → 2 kept


def test_conv_transpose():
    def mid(g, x):
        y = g.op("ConvTranspose", [x, g.rand(8, 6, 2, 2), g.rand(6)], kernel_shape=[2, 2], strides=[2, 2])
        return g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2]), 6
    r = prune_ok(between(mid))
    assert r.report.groups_pruned >= 2


def test_matmul_and_gemm_mlp():
    g = G()
    x = g.op("Flatten", ["input"], axis=1)
    h = g.op("Relu", [g.op("Gemm", [x, g.rand(32, 20), g.rand(20)])])
    h = g.op("MatMul", [h, g.rand(20, 12)])
    g.nodes.append(__import__("onnx").helper.make_node("Gemm", [h, g.rand(5, 12), g.rand(5)], ["output"], transB=1))
    r = prune_ok(g.model((2, 2, 4, 4), (2, 5)))
    assert r.report.groups_pruned == 2


def test_unknown_op_freezes_and_is_named():
    g = G()
    a = g.conv("input", 4, 8)
    b, _ = g.op("TopK", [a, g.const([8], np.int64)], n_out=2, axis=1)
    c = g.conv(b, 8, 6)
    g.head(c, 6)
    model = g.model(SHAPE, (1, 5))
    r = prune_ok(model)
    assert any("TopK" in op for op in r.report.unmapped_ops)
    cg = r.channels
    topk = [n for n in cg.graph.nodes if n.op == "TopK"][0]
    group = cg.group(Space(topk.inputs[0], 1))
    assert group.frozen and any("no channel rule for op TopK" in why for why in group.reasons(5))
    with pytest.raises(UnsupportedModelError):
        graphprune.prune(model, ratio=0.5, strict=True)


def test_custom_domain_op_freezes():
    g = G()
    a = g.conv("input", 4, 8)
    b = g.op("Relu", [a], domain="com.example")
    c = g.conv(b, 8, 6)
    g.head(c, 6)
    model = g.model(SHAPE, (1, 5), extra_opsets=[("com.example", 1)])
    cg = inspect(model).channels
    relu = [n for n in cg.graph.nodes if n.op == "Relu"][0]
    assert cg.group(Space(relu.inputs[0], 1)).frozen


def integer_conv(g, x, cin, cout, weight_const=True):
    """DynamicQuantizeLinear → ConvInteger (uint8 weight, zero point 128) → Cast → Mul(scale): x's channels in."""
    q, s, z = g.op("DynamicQuantizeLinear", [x], n_out=3)
    w = g.const(g.rng.integers(0, 256, (cout, cin, 3, 3)), np.uint8)
    if not weight_const:  # quantized in the graph (graphsurgeon never folds QuantizeLinear)
        w = g.op("QuantizeLinear", [g.rand(cout, cin, 3, 3), g.const(0.01), g.const(128, np.uint8)])
    acc = g.op("ConvInteger", [q, w, z, g.const(128, np.uint8)], pads=[1, 1, 1, 1])
    return g.op("Mul", [g.op("Mul", [g.op("Cast", [acc], to=1), g.const(1e-3)]), s])


def test_conv_integer_and_dynamic_quantize_couple_like_conv():
    r = prune_ok(between(lambda g, x: (integer_conv(g, g.op("Relu", [x]), 8, 8), 8)))
    assert r.report.units_removed >= 4


def test_conv_integer_with_a_computed_weight_freezes_its_input_channels():
    g = G()
    x = g.op("Relu", [g.conv("input", 4, 8)])
    g.head(integer_conv(g, x, 8, 6, weight_const=False), 6)
    r = prune_ok(g.model(SHAPE, (1, 5)))
    why = [w for grp in r.report.groups for w in grp.frozen_because]
    assert any("no constant weight and zero point" in w for w in why), why


def test_matmul_integer_per_column_zero_point_shrinks_with_its_column():
    g = G()
    h = g.op("Relu", [g.op("MatMul", ["input", g.rand(8, 16)])])
    q, s, z = g.op("DynamicQuantizeLinear", [h], n_out=3)
    zp = g.const(g.rng.integers(100, 156, 12), np.uint8)
    acc = g.op("MatMulInteger", [q, g.const(g.rng.integers(0, 256, (16, 12)), np.uint8), z, zp])
    y = g.op("Relu", [g.op("Mul", [g.op("Cast", [acc], to=1), s])])
    g.nodes.append(__import__("onnx").helper.make_node("MatMul", [y, g.rand(12, 5)], ["output"], name="fc"))
    r = prune_ok(g.model((2, 8), (2, 5)), round_to=1)
    assert r.plan.kept(Space(zp, 0)) is not None and len(r.plan.kept(Space(zp, 0))) < 12

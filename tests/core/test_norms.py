"""Normalisations over a pruned axis: each pattern couples the hidden width instead of freezing it, is verified
against the renormalised oracle (statistics over the kept channels), and the oracle is what catches a rule that
forgets to say so. Reductions that are not a normalisation statistic stay frozen."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_builder import G

import graphprune
from graphprune.api import inspect
from graphprune.channels.rules import RULES, Rule, Space
from graphprune.errors import VerificationError
from graphprune.verify.masked import verify_masked

SHAPE = (1, 8, 16)  # (batch, tokens, features): the hidden width 32 lives between two projections


def projected(g: G, body) -> onnx.ModelProto:
    """input [1, 8, 16] → MatMul to 32 → ``body(g, h)`` → MatMul back to 16: only the 32-wide space can shrink."""
    h = g.op("MatMul", ["input", g.rand(16, 32)])
    y = body(g, h)
    g.nodes.append(helper.make_node("MatMul", [y, g.rand(32, 16)], ["output"], name="out_proj"))
    return g.model(SHAPE, SHAPE)


def with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    return model


def mean(g: G, x: str) -> str:
    return g.op("ReduceMean", [x, g.const([-1], np.int64)], keepdims=1)


def fused_ln(g, h):
    return g.op("LayerNormalization", [h, g.const(np.linspace(0.5, 1.5, 32)), g.rand(32)], axis=-1, epsilon=1e-5)


def written_ln(g, h):
    d = g.op("Sub", [h, mean(g, h)])
    var = mean(g, g.op("Pow", [d, g.const(2.0)]))
    y = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.const(1e-5)])])])
    return g.op("Add", [g.op("Mul", [y, g.const(np.linspace(0.5, 1.5, 32))]), g.rand(32)])


def rms(inverse: str):
    def body(g, h):
        s = g.op("Add", [mean(g, g.op("Mul", [h, h])), g.const(1e-6)])
        if inverse == "div":
            y = g.op("Div", [h, g.op("Sqrt", [s])])
        elif inverse == "reciprocal":
            y = g.op("Mul", [h, g.op("Reciprocal", [g.op("Sqrt", [s])])])
        elif inverse == "one_over":
            y = g.op("Mul", [h, g.op("Div", [g.const(1.0), g.op("Sqrt", [s])])])
        else:
            y = g.op("Mul", [g.op("Pow", [s, g.const(-0.5)]), h])
        return g.op("Mul", [g.const(np.linspace(0.5, 1.5, 32)), y])
    return body


def grn(g, h):
    """ConvNeXt-V2: x · (G / mean_c(G)) with G the L2 norm of each channel over the tokens."""
    gx = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [h, h]), g.const([1], np.int64)], keepdims=1)])
    n = g.op("Div", [gx, g.op("Add", [mean(g, gx), g.const(1e-6)])])
    return g.op("Add", [g.op("Mul", [h, n]), h])


def channel_mean_feature(g, h):
    """Not a normalisation: the mean over channels is added back as a feature."""
    return g.op("Add", [h, mean(g, h)])


PATTERNS = {"fused_layer_norm": fused_ln, "written_layer_norm": written_ln, "rms_div": rms("div"),
            "rms_reciprocal": rms("reciprocal"), "rms_one_over": rms("one_over"), "rms_pow": rms("pow"),
            "grn": grn}


def hidden_group(model):
    """The group of the first projection's output features."""
    ins = inspect(model)
    first = next(n for n in ins.source.graph.nodes if n.op == "MatMul")
    return ins.channels.group(Space(first.outputs[0], 2))


@pytest.mark.parametrize("name", list(PATTERNS))
def test_a_normalisation_couples_the_hidden_width_and_verifies_renormalised(name):
    model = projected(G(opset=18), PATTERNS[name])
    group = hidden_group(model)
    assert group.prunable, group.reasons()
    result = graphprune.prune(model, ratio=0.5, round_to=1)
    assert result.report.verification.ok and result.plan.renormalised
    plain = dataclasses.replace(result.plan, renormalised=())  # the plain masked original does not hold
    assert not verify_masked(result.source, result.model, plain).ok


def test_a_reduction_that_is_no_normalisation_stays_frozen():
    group = hidden_group(projected(G(opset=18), channel_mean_feature))
    assert not group.prunable and any("reduced over by ReduceMean" in r for r in group.reasons())


def test_a_layer_norm_over_two_axes_stays_frozen():
    g = G(opset=18)
    h = g.op("MatMul", ["input", g.rand(16, 32)])
    y = g.op("LayerNormalization", [h, g.const(np.ones((8, 32))), g.rand(8, 32)], axis=-2)
    g.nodes.append(helper.make_node("MatMul", [y, g.rand(32, 16)], ["output"], name="out_proj"))
    group = hidden_group(g.model(SHAPE, SHAPE))
    assert not group.prunable and any("several axes" in r for r in group.reasons())


def test_a_norm_rule_that_forgets_to_renormalise_is_caught_by_the_oracle(monkeypatch):
    model = projected(G(opset=18), fused_ln)
    assert graphprune.prune(model, ratio=0.5, round_to=1).report.verification.ok

    def couples_only(ctx):  # the bug: LayerNorm treated as element-wise on its normalised axis
        x, y = ctx.node.inputs[0], ctx.node.outputs[0]
        for k in range(ctx.rank(x)):
            ctx.couple_axes(x, k, y, k)
        for p in ctx.node.inputs[1:3]:
            ctx.couple_axes(p, 0, y, ctx.rank(x) - 1)

    monkeypatch.setitem(RULES, "LayerNormalization", Rule(("LayerNormalization",), couples_only, "broken"))
    with pytest.raises(VerificationError, match="masked_original"):
        graphprune.prune(model, ratio=0.5, round_to=1)


def skip_norm(op: str):
    """onnxruntime's fused com.microsoft form: the norm of ``h + skip (+ bias)``, the sum also an output that a
    second norm reads, and the optional mean / inverse deviation outputs left empty, as its optimiser writes them."""
    def body(g, h):
        skip = g.op("Relu", [h])
        affine = [g.const(np.linspace(0.5, 1.5, 32))] + ([g.rand(32)] if op == "SkipLayerNormalization" else [])
        out, total = f"{op}_y", f"{op}_sum"
        g.nodes.append(helper.make_node(op, [h, skip, *affine, g.rand(32)], [out, "", "", total], name=op,
                                        domain="com.microsoft", epsilon=1e-5))
        return g.op("LayerNormalization", [g.op("Add", [out, total]), g.const(np.ones(32)), g.rand(32)], axis=-1)
    return body


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_onnxruntime_fused_skip_norms_couple_and_verify_renormalised(op):
    g = G(opset=18)
    h = g.op("MatMul", ["input", g.rand(16, 32)])
    y = skip_norm(op)(g, h)
    g.nodes.append(helper.make_node("MatMul", [y, g.rand(32, 16)], ["output"], name="out_proj"))
    model = g.model(SHAPE, SHAPE, extra_opsets=[("com.microsoft", 1)])
    group = hidden_group(model)  # the shapes after the contrib op come from onnxruntime's symbolic inference
    assert group.prunable, group.reasons()
    result = graphprune.prune(model, ratio=0.5, round_to=1, budget="channels")
    assert result.report.verification.ok and op in {r.node for r in result.plan.renormalised}
    assert len(result.plan.removed[group.id]) == 16
    plain = dataclasses.replace(result.plan, renormalised=())
    assert not verify_masked(result.source, result.model, plain).ok


def test_group_norm_of_one_group_as_exported_through_instance_norm_loses_channels():
    """torch exports GroupNorm(1, C) (PoolFormer) as Reshape(N, 1, -1) → InstanceNormalization → Reshape back →
    the per-channel affine: the channels are blocks of the flattened axis, renormalised."""
    g = G(opset=17)
    h = g.conv("input", 3, 32)
    flat = g.op("Reshape", [h, g.const([1, 1, -1], np.int64)])
    normed = g.op("InstanceNormalization", [flat, g.const([1.0]), g.const([0.0])], epsilon=1e-5)
    back = g.op("Reshape", [normed, g.const([1, 32, 8, 8], np.int64)])
    y = g.op("Add", [g.op("Mul", [back, g.const(np.linspace(0.5, 1.5, 32).reshape(32, 1, 1))]), g.rand(32, 1, 1)])
    g.nodes.append(helper.make_node("Conv", [y, g.rand(8, 32, 1, 1)], ["output"], name="out_conv"))
    model = g.model([1, 3, 8, 8], [1, 8, 8, 8])
    result = graphprune.prune(model, ratio=0.5, round_to=1, budget="channels")
    assert result.report.verification.ok and result.plan.renormalised
    assert result.report.units_removed == 16
    plain = dataclasses.replace(result.plan, renormalised=())
    assert not verify_masked(result.source, result.model, plain).ok


def test_onnxruntime_simplified_layer_norm_in_the_onnx_domain_loads_couples_and_verifies_renormalised():
    """onnxruntime's optimiser writes SimplifiedLayerNormalization (RMS norm) in the ONNX domain, where the ONNX
    checker has no schema ("No Op registered"): the model was refused at load. It is checked as the contrib op it
    is, its shapes come from onnxruntime's inference, and its hidden width prunes under the renormalised oracle."""
    g = G(opset=17)
    h = g.op("MatMul", ["input", g.rand(16, 32)])
    g.nodes.append(helper.make_node("SimplifiedLayerNormalization", [h, g.const(np.linspace(0.5, 1.5, 32))], ["sln"],
                                    name="sln", axis=-1, epsilon=1e-6))
    g.nodes.append(helper.make_node("MatMul", ["sln", g.rand(32, 16)], ["output"], name="out_proj"))
    model = g.model(SHAPE, SHAPE)
    with pytest.raises(onnx.checker.ValidationError, match="No Op registered"):
        onnx.checker.check_model(model)
    result = graphprune.prune(model, ratio=0.5, round_to=1, budget="channels")
    assert result.report.verification.ok and {r.node for r in result.plan.renormalised} == {"sln"}
    assert result.report.after.params == result.report.before.params // 2
    plain = dataclasses.replace(result.plan, renormalised=())
    assert not verify_masked(result.source, result.model, plain).ok


def test_a_model_the_checker_refuses_for_another_reason_is_still_refused():
    g = G(opset=17)
    h = g.op("MatMul", ["input", g.rand(16, 32)])
    g.nodes.append(helper.make_node("NoSuchOp", [h], ["y"], name="bad"))
    g.nodes.append(helper.make_node("MatMul", ["y", g.rand(32, 16)], ["output"], name="out_proj"))
    with pytest.raises(graphprune.errors.ModelLoadError, match="NoSuchOp"):
        graphprune.prune(g.model(SHAPE, SHAPE), ratio=0.5)

"""Quantized models: QuantizeLinear / DequantizeLinear (QDQ), DynamicQuantizeLinear, and the integer linear ops
ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul.

Quantize / dequantize are element-wise, with per-axis scale and zero point: per-tensor parameters are scalars,
per-axis ones are vectors along ``axis`` and shrink with that axis. Blocked quantisation (``block_size``) ties
neighbouring channels together and is frozen. The integer linear ops couple like Conv / MatMul over their quantized
operands (see :mod:`graphprune.channels.quantized` for why their contracted axis needs a constant weight).
"""

from __future__ import annotations

from graphprune.channels.quantized import INTEGER_LINEAR, IntegerLinear, input_name
from graphprune.channels.rules.base import RuleContext, rule
from graphprune.channels.rules.conv import conv_channels
from graphprune.channels.rules.linear import matmul_channels


@rule("QuantizeLinear", "DequantizeLinear")
def quantize(ctx: RuleContext) -> None:
    """X ↔ Y on every axis; a 1-D scale / zero point ↔ Y[axis]."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    if int(ctx.attr("block_size", 0)):
        return  # blocked: every axis stays unmapped, so frozen
    for k in range(r):
        ctx.couple_axes(x, k, y, k)
    axis = int(ctx.attr("axis", 1)) % max(r, 1)
    for p in (ctx.node.input(1), ctx.node.input(2)):
        couple_per_channel(ctx, p, y, axis)


@rule("DynamicQuantizeLinear")
def dynamic_quantize(ctx: RuleContext) -> None:
    """X ↔ Y on every axis (its scale and zero point do not change: removed atoms are 0, inside its range).

    Both come from the range of the whole tensor, widened to include 0: the masked original's removed atoms are
    exactly 0, so they change neither, and the pruned model gets the same."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    for k in range(ctx.rank(x)):
        ctx.couple_axes(x, k, y, k)


@rule("ConvInteger", "QLinearConv")
def conv_integer(ctx: RuleContext) -> None:
    """As Conv over the quantized input, weight and bias; per-channel weight zero points and scales ↔ output C.

    Input C shrinks only when the weight and its zero point are constants (see channels/quantized.py)."""
    q, ins, y = INTEGER_LINEAR[ctx.node.op], ctx.node.inputs, ctx.node.outputs[0]
    x, w = ins[q.a], ins[q.b]
    conv_channels(ctx, x, w, y, input_name(ins, q.bias))
    for p in (input_name(ins, q.b_zp), input_name(ins, q.b_scale)):
        couple_per_channel(ctx, p, y, 1)
    if not constant_operand(ctx, q, "b"):
        ctx.freeze_axis(x, 1, NOT_CONSTANT.format(op=ctx.node.op))


@rule("MatMulInteger", "QLinearMatMul")
def matmul_integer(ctx: RuleContext) -> None:
    """As MatMul over the quantized operands; A's per-row zero point / scale ↔ Y[-2], B's per-column ↔ Y[-1].

    K shrinks only when one operand and its zero point are constants (see channels/quantized.py)."""
    q, ins, y = INTEGER_LINEAR[ctx.node.op], ctx.node.inputs, ctx.node.outputs[0]
    a, b = ins[q.a], ins[q.b]
    matmul_channels(ctx, a, b, y)
    if ctx.rank(a) < 2 or ctx.rank(b) < 2:
        return
    for p in (input_name(ins, q.a_zp), input_name(ins, q.a_scale)):
        couple_per_channel(ctx, p, y, ctx.rank(y) - 2)
    for p in (input_name(ins, q.b_zp), input_name(ins, q.b_scale)):
        couple_per_channel(ctx, p, y, ctx.rank(y) - 1)
    if not (constant_operand(ctx, q, "a") or constant_operand(ctx, q, "b")):
        ctx.freeze_axis(a, -1, NOT_CONSTANT.format(op=ctx.node.op))


NOT_CONSTANT = ("{op} with no constant weight and zero point: a removed channel would still contribute "
                "(its zero point, not 0, is what contributes nothing)")


def constant_operand(ctx: RuleContext, q: IntegerLinear, side: str) -> bool:
    """Whether operand ``side`` ("a" / "b") and its zero point (if any) are constants: the masked original can then
    fill its removed entries with the zero point (:func:`graphprune.channels.quantized.weight_fill`)."""
    ins = ctx.node.inputs
    operand, zp = ins[getattr(q, side)], input_name(ins, getattr(q, f"{side}_zp"))
    return ctx.graph.is_const(operand) and (zp is None or ctx.graph.is_const(zp))


def couple_per_channel(ctx: RuleContext, p: str | None, y: str, axis: int) -> None:
    """A 1-D quantization parameter ``p`` with one entry per index of ``y[axis]`` ↔ that axis (a scalar, or a 1-D
    one of a single entry, is per tensor and left as it is)."""
    if p and ctx.rank(p) == 1 and ctx.shape(p)[0] == ctx.shape(y)[axis] and ctx.shape(p)[0] > 1:
        ctx.couple_axes(p, 0, y, axis)

"""Conv and ConvTranspose, dense and grouped.

Dense: the input channels are the weight's input axis, the output channels its output axis (and the bias).
Grouped (group > 1, depthwise included): channels can only go a whole group at a time, so a virtual space
of ``group`` atoms couples each group to its block of input and of output channels; the weight's
per-group input axis stays as it is and the emitter rewrites ``group``.
"""

from __future__ import annotations

from graphprune.channels.rules.base import Block, RuleContext, rule


def couple_batch_and_bias(ctx: RuleContext, x: str, y: str, out_axis_owner: tuple[str, int]) -> None:
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(out_axis_owner[0], out_axis_owner[1], y, 1)
    bias = ctx.node.input(2)
    if bias:
        ctx.couple_axes(bias, 0, y, 1)


@rule("Conv")
def conv(ctx: RuleContext) -> None:
    """Input C ↔ W[1], W[0] ↔ output C ↔ bias; grouped convs couple whole groups."""
    x, w, y = ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0]
    group = int(ctx.attr("group", 1))
    couple_batch_and_bias(ctx, x, y, (w, 0))
    if group == 1:
        ctx.couple_axes(x, 1, w, 1)
        return
    cin, cout = ctx.shape(x)[1], ctx.shape(y)[1]
    groups = ctx.virtual("groups", group)
    ctx.couple(groups, ctx.space(x, 1), Block(cin // group))
    ctx.couple(groups, ctx.space(y, 1), Block(cout // group))
    ctx.freeze_axis(w, 1, "per-group input width of a grouped Conv")


@rule("ConvTranspose")
def conv_transpose(ctx: RuleContext) -> None:
    """Input C ↔ W[0], W[1] ↔ output C ↔ bias; grouped ones couple whole groups."""
    x, w, y = ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0]
    group = int(ctx.attr("group", 1))
    ctx.couple_axes(x, 1, w, 0)
    if group == 1:
        couple_batch_and_bias(ctx, x, y, (w, 1))
        return
    ctx.couple_axes(x, 0, y, 0)
    bias = ctx.node.input(2)
    if bias:
        ctx.couple_axes(bias, 0, y, 1)
    cin, cout = ctx.shape(x)[1], ctx.shape(y)[1]
    groups = ctx.virtual("groups", group)
    ctx.couple(groups, ctx.space(x, 1), Block(cin // group))
    ctx.couple(groups, ctx.space(y, 1), Block(cout // group))
    ctx.freeze_axis(w, 1, "per-group output width of a grouped ConvTranspose")

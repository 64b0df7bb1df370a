"""Conv and ConvTranspose, dense and grouped.

Dense: the input channels are the weight's input axis, the output channels its output axis (and the bias).
Grouped (group > 1, depthwise included): channels can only go a whole group at a time, so a virtual space
of ``group`` atoms couples each group to its block of input and of output channels; the weight's
per-group input axis stays as it is and the emitter rewrites ``group``.
"""

from __future__ import annotations

from graphprune.channels.rules.base import Block, RuleContext, rule


def couple_batch_and_bias(ctx: RuleContext, x: str, y: str, out_axis_owner: tuple[str, int], bias: str | None) -> None:
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(out_axis_owner[0], out_axis_owner[1], y, 1)
    if bias:
        ctx.couple_axes(bias, 0, y, 1)


@rule("Conv", "ConvTranspose")
def conv(ctx: RuleContext) -> None:
    """Input C ↔ the weight's input axis (W[1]; ConvTranspose W[0]), its output axis ↔ output C ↔ bias; grouped: whole groups.
    """
    conv_channels(ctx, ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0], ctx.node.input(2),
                  transposed=ctx.node.op == "ConvTranspose")


def conv_channels(ctx: RuleContext, x: str, w: str, y: str, bias: str | None, *, transposed: bool = False) -> None:
    """The couplings of a convolution of ``x`` by ``w`` (+ ``bias``) into ``y``, whichever op computes it (Conv,
    ConvTranspose, or the quantized ConvInteger / QLinearConv, whose weight and bias sit at other inputs)."""
    w_in, w_out = (0, 1) if transposed else (1, 0)
    group = int(ctx.attr("group", 1))
    if group == 1:
        couple_batch_and_bias(ctx, x, y, (w, w_out), bias)
        ctx.couple_axes(x, 1, w, w_in)
        return
    if not transposed:  # each group's filters are a block of W[0]; W[1] is the per-group input width
        couple_batch_and_bias(ctx, x, y, (w, w_out), bias)
        frozen = w_in
    else:  # each group's input channels are a block of W[0]; W[1] is the per-group output width
        ctx.couple_axes(x, 1, w, w_in)
        ctx.couple_axes(x, 0, y, 0)
        if bias:
            ctx.couple_axes(bias, 0, y, 1)
        frozen = w_out
    cin, cout = ctx.shape(x)[1], ctx.shape(y)[1]
    groups = ctx.virtual("groups", group)
    ctx.couple(groups, ctx.space(x, 1), Block(cin // group))
    ctx.couple(groups, ctx.space(y, 1), Block(cout // group))
    width = "output" if transposed else "input"
    ctx.freeze_axis(w, frozen, f"per-group {width} width of a grouped {ctx.node.op}")

"""QuantizeLinear / DequantizeLinear (QDQ models): element-wise, with per-axis scale and zero point.

Per-tensor parameters are scalars; per-axis ones are vectors along ``axis`` and shrink with that axis.
Blocked quantisation (``block_size``) ties neighbouring channels together and is frozen.
"""

from __future__ import annotations

from graphprune.channels.rules.base import RuleContext, rule


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
        if p and ctx.rank(p) == 1 and ctx.shape(p)[0] == ctx.shape(y)[axis] and ctx.shape(p)[0] > 1:
            ctx.couple_axes(p, 0, y, axis)

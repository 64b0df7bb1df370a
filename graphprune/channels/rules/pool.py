"""Pooling, resizing and padding: batch and channel pass through; the spatial axes they change do not."""

from __future__ import annotations

from graphprune.channels.rules.base import RuleContext, rule


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pool(ctx: RuleContext) -> None:
    """N ↔ N and C ↔ C; MaxPool's indices output encodes flat positions, so it is frozen."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(x, 1, y, 1)
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        for k in range(ctx.rank(ctx.node.outputs[1])):
            ctx.freeze_axis(ctx.node.outputs[1], k, "MaxPool indices encode flat positions across channels")


def pass_unchanged_axes(ctx: RuleContext) -> None:
    """Couple every axis whose size the op leaves unchanged (a resize or pad of 0 along it)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    for k, (a, b) in enumerate(zip(ctx.shape(x), ctx.shape(y))):
        if a == b and unchanged_axis(ctx, k):
            ctx.couple_axes(x, k, y, k)


def unchanged_axis(ctx: RuleContext, k: int) -> bool:
    if ctx.node.op != "Pad":
        return True
    pads = ctx.value(ctx.node.input(1)) if ctx.graph.opset >= 11 else ctx.attr("pads")
    if pads is None:
        return False
    r = ctx.rank(ctx.node.inputs[0])
    axes = ctx.value(ctx.node.input(3))
    axes = list(range(r)) if axes is None else [int(a) % r for a in axes]
    if k not in axes:
        return True
    i = axes.index(k)
    return int(pads[i]) == 0 and int(pads[i + len(axes)]) == 0


@rule("Resize", "Upsample")
def resize(ctx: RuleContext) -> None:
    """Axes that keep their size (scale 1) pass through; resized axes are frozen."""
    pass_unchanged_axes(ctx)


@rule("Pad")
def pad(ctx: RuleContext) -> None:
    """Axes with no padding pass through; padded axes are frozen."""
    pass_unchanged_axes(ctx)

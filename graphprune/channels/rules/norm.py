"""Normalisations and softmax.

Inference BatchNormalization is per-channel affine, so it is element-wise with its four vectors on the
channel axis. Instance / Group / Layer normalisation, Softmax and LRN compute statistics over some axes:
removing an entry there would change every other entry, so those axes are frozen.
"""

from __future__ import annotations

from graphprune.channels.rules.base import RuleContext, rule


@rule("BatchNormalization")
def batch_norm(ctx: RuleContext) -> None:
    """Element-wise on X; scale, bias, mean and var ↔ channel axis 1."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    if int(ctx.attr("training_mode", 0)):
        for k in range(ctx.rank(x)):
            ctx.freeze_axis(x, k, "BatchNormalization in training mode computes batch statistics")
        return
    for k in range(ctx.rank(y)):
        ctx.couple_axes(x, k, y, k)
    for p in ctx.node.inputs[1:5]:
        if p:
            ctx.couple_axes(p, 0, y, 1)
    ctx.mark_stats(ctx.node.input(3), ctx.node.input(4))


@rule("InstanceNormalization")
def instance_norm(ctx: RuleContext) -> None:
    """Batch and channel pass through; the spatial axes are normalised over (frozen)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(x, 1, y, 1)
    for p in ctx.node.inputs[1:3]:
        ctx.couple_axes(p, 0, y, 1)
    for k in range(2, ctx.rank(x)):
        ctx.freeze_axis(x, k, "normalised over by InstanceNormalization")


def freeze_normalised(ctx: RuleContext, normalised: set[int], why: str) -> None:
    """Axes in ``normalised`` are frozen on every tensor; the others pass through from input to outputs."""
    x = ctx.node.inputs[0]
    r = ctx.rank(x)
    for y in (o for o in ctx.node.outputs[:1] if o):
        for k in range(r):
            if k in normalised:
                ctx.freeze_axis(x, k, why)
                ctx.freeze_axis(y, k, why)
            else:
                ctx.couple_axes(x, k, y, k)


@rule("LayerNormalization")
def layer_norm(ctx: RuleContext) -> None:
    """Axes from ``axis`` on are normalised over (frozen, with scale and bias); the leading axes pass."""
    r = ctx.rank(ctx.node.inputs[0])
    axis = int(ctx.attr("axis", -1)) % r
    freeze_normalised(ctx, set(range(axis, r)), "normalised over by LayerNormalization")


@rule("GroupNormalization")
def group_norm(ctx: RuleContext) -> None:
    """Channels are normalised in groups (frozen); batch and spatial axes pass."""
    freeze_normalised(ctx, {1}, "normalised over by GroupNormalization")


@rule("LRN")
def lrn(ctx: RuleContext) -> None:
    """Normalises across neighbouring channels: the channel axis is frozen."""
    freeze_normalised(ctx, {1}, "LRN mixes neighbouring channels")


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(ctx: RuleContext) -> None:
    """The softmax axis is frozen (before opset 13, every axis from ``axis`` on)."""
    r = ctx.rank(ctx.node.inputs[0])
    old = ctx.graph.opset < 13
    axis = int(ctx.attr("axis", 1 if old else -1)) % r
    axes = set(range(axis, r)) if old else {axis}
    freeze_normalised(ctx, axes, f"{ctx.node.op} normalises over this axis")

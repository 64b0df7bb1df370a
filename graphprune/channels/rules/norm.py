"""Normalisations and softmax.

ONNX Runtime's fused forms (``SimplifiedLayerNormalization`` = RMS norm; com.microsoft ``SkipLayerNormalization``
and ``SkipSimplifiedLayerNormalization``: the norm of ``input + skip (+ bias)``, the sum optionally an output) are
the same normalisations and follow the same rules. Inference BatchNormalization is per-channel affine, so it is element-wise with its four vectors on the
channel axis. Layer and RMS normalisation over their last axis take statistics over the channels: that axis is
coupled through them and **renormalised** (the pruned model takes the mean and variance over the kept channels,
and is verified against the original doing the same: :class:`graphprune.channels.rules.Renormalised`). Group
normalisation loses whole groups, whose statistics are their own. Instance normalisation's spatial axes, Softmax
and LRN mix what they normalise over: those axes are frozen.
"""

from __future__ import annotations

from graphprune.channels.rules.base import Block, RuleContext, RuleError, rule


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
    """Batch and channel pass through; the spatial axes are normalised over (frozen), except one lone axis
    (rank 3), which is renormalised: that is how GroupNorm is exported (``Reshape(N, G, -1)`` → InstanceNorm →
    ``Reshape`` back → the per-channel affine), so GroupNorm(1) (PoolFormer, ConvNeXt-style ``LayerNorm2d``)
    loses channels, each a block of the flattened axis, with its statistics over the kept ones."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(x, 1, y, 1)
    for p in ctx.node.inputs[1:3]:
        ctx.couple_axes(p, 0, y, 1)
    if ctx.rank(x) == 3 and not any(ctx.graph.consumers.get(o) for o in ctx.node.outputs[1:] if o):
        ctx.couple_axes(x, 2, y, 2)
        ctx.renormalise(ctx.space(x, 2))
        return
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


@rule("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
def layer_norm(ctx: RuleContext) -> None:
    """Over the last axis: every axis passes, scale (and bias) ↔ the last, which is renormalised; over more axes:
    those are frozen (with scale and bias)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", -1)) % r
    if axis != r - 1:
        freeze_normalised(ctx, set(range(axis, r)), f"normalised over by {ctx.node.op} (over several axes)")
        return
    if any(ctx.graph.consumers.get(o) for o in ctx.node.outputs[1:] if o):
        freeze_normalised(ctx, {r - 1}, f"{ctx.node.op}'s mean / inverse deviation outputs are read")
        return
    for k in range(r):
        ctx.couple_axes(x, k, y, k)
    for p in ctx.node.inputs[1:3]:
        if p and ctx.rank(p) == 1:
            ctx.couple_axes(p, 0, y, r - 1)
        elif p:
            ctx.freeze_axis(p, ctx.rank(p) - 1, f"{ctx.node.op} affine of rank {ctx.rank(p)}")
    ctx.renormalise(ctx.space(x, r - 1))


SKIP_AFFINE = {"SkipLayerNormalization": (2, 3, 4), "SkipSimplifiedLayerNormalization": (2, 3)}  # gamma, beta?, bias


@rule(*(f"com.microsoft:{op}" for op in SKIP_AFFINE))
def skip_layer_norm(ctx: RuleContext) -> None:
    """The norm over the last axis of ``input + skip (+ bias)``: input, skip, the output and the sum output
    (index 3) coupled axis by axis, gamma / beta / bias ↔ the last axis, which is renormalised; the mean and
    inverse deviation outputs read: frozen."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    if any(ctx.graph.consumers.get(o) for o in ctx.node.outputs[1:3] if o):
        for t in (*ctx.node.inputs[:2], *(o for o in ctx.node.outputs if o)):
            if ctx.rank(t) == r:
                ctx.freeze_axis(t, r - 1, f"{ctx.node.op}'s mean / inverse deviation outputs are read")
        return
    for t in [ctx.node.inputs[1]] + [o for o in ctx.node.outputs[3:4] if o]:
        if ctx.rank(t) != r:
            raise RuleError(f"{ctx.node.op} tensor '{t}' of rank {ctx.rank(t)}, input of rank {r}")
    for t in [x, ctx.node.inputs[1]] + [o for o in ctx.node.outputs[3:4] if o]:
        for k in range(r):
            ctx.couple_axes(t, k, y, k)
    for i in SKIP_AFFINE[ctx.node.op]:
        p = ctx.node.input(i)
        if p and ctx.rank(p) == 1:
            ctx.couple_axes(p, 0, y, r - 1)
        elif p:
            ctx.freeze_axis(p, ctx.rank(p) - 1, f"{ctx.node.op} affine of rank {ctx.rank(p)}")
    ctx.renormalise(ctx.space(x, r - 1))


@rule("GroupNormalization")
def group_norm(ctx: RuleContext) -> None:
    """Whole groups of channels (a virtual space of ``num_groups``), each normalised over itself; batch and
    spatial axes pass; scale and bias per channel (opset 21) or per group (opset 18)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r, c = ctx.rank(x), ctx.shape(x)[1]
    g = int(ctx.attr("num_groups"))
    if g < 1 or c % g:
        raise RuleError(f"{c} channels do not split into {g} groups")
    for k in range(r):
        if k != 1:
            ctx.couple_axes(x, k, y, k)
    groups = ctx.virtual("groups", g)
    ctx.couple(groups, ctx.space(x, 1), Block(c // g))
    ctx.couple(groups, ctx.space(y, 1), Block(c // g))
    for p in ctx.node.inputs[1:3]:
        if p and ctx.shape(p) == (c,):
            ctx.couple_axes(p, 0, y, 1)
        elif p and ctx.shape(p) == (g,):
            ctx.couple(ctx.space(p, 0), groups)


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

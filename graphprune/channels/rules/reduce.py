"""Reductions: the reduced axes are frozen (their size is in the result); the others pass through. A
``ReduceMean`` that is a statistic of a normalisation written out of small ops (:mod:`graphprune.channels.norms`)
renormalises its axis instead (the pruned model takes it over the kept channels)."""

from __future__ import annotations

from graphprune.channels.norms import norm_statistics
from graphprune.channels.rules.base import RuleContext, rule

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
# ops that took their axes as an input from this opset on
AXES_AS_INPUT_SINCE = {"ReduceSum": 13}


def reduced_axes(ctx: RuleContext) -> set[int] | None:
    """The reduced axes, or None when they are not known statically."""
    r = ctx.rank(ctx.node.inputs[0])
    since = AXES_AS_INPUT_SINCE.get(ctx.node.op, 18)
    if ctx.graph.opset >= since:
        name = ctx.node.input(1)
        axes = None if name is None else ctx.value(name)
        if name is not None and axes is None:
            return None
    else:
        axes = ctx.attr("axes")
    if axes is None or len(axes) == 0:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return set()
        return set(range(r))
    return {int(a) % r for a in axes}


@rule(*REDUCE)
def reduce(ctx: RuleContext) -> None:
    """Kept axes ↔ their place in the output; reduced axes frozen."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    axes = reduced_axes(ctx)
    if axes is None:
        return  # dynamic axes: nothing mapped, everything the node touches is frozen by default
    keepdims = bool(int(ctx.attr("keepdims", 1)))
    statistic = norm_statistics(ctx.graph).get(ctx.node.name) if ctx.node.op == "ReduceMean" else None
    j = 0
    for k in range(ctx.rank(x)):
        if k in axes and k == statistic:
            ctx.renormalise(ctx.space(x, k))
            j += 1
            continue
        if k in axes:
            ctx.freeze_axis(x, k, f"reduced over by {ctx.node.op}")
            j += keepdims
            continue
        ctx.couple_axes(x, k, y, j)
        j += 1


@rule("ArgMax", "ArgMin")
def arg_reduce(ctx: RuleContext) -> None:
    """The reduced axis is frozen; the others pass through."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", 0)) % r
    keepdims = bool(int(ctx.attr("keepdims", 1)))
    j = 0
    for k in range(r):
        if k == axis:
            ctx.freeze_axis(x, k, f"reduced over by {ctx.node.op}")
            j += keepdims
            continue
        ctx.couple_axes(x, k, y, j)
        j += 1

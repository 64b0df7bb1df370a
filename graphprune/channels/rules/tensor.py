"""Concat, Split and Slice: channels move by offsets; the emitter rewrites split sizes and slice bounds."""

from __future__ import annotations

from graphprune.channels.rules.base import IDENTITY, Offset, RuleContext, rule


@rule("Concat")
def concat(ctx: RuleContext) -> None:
    """Input i's axis ↔ output axis at offset Σ sizes before it; other axes identity."""
    y = ctx.node.outputs[0]
    r = ctx.rank(y)
    axis = int(ctx.attr("axis")) % r
    offset = 0
    for x in (t for t in ctx.node.inputs if t):
        for k in range(r):
            ctx.couple_axes(x, k, y, k, Offset(offset) if k == axis else IDENTITY)
        offset += ctx.shape(x)[axis]


@rule("Split")
def split(ctx: RuleContext) -> None:
    """Output i's axis ↔ input axis at offset Σ sizes before it; other axes identity."""
    x = ctx.node.inputs[0]
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", 0)) % r
    offset = 0
    for y in ctx.node.outputs:
        for k in range(r):
            ctx.couple_axes(y, k, x, k, Offset(offset) if k == axis else IDENTITY)
        offset += ctx.shape(y)[axis]


def slice_params(ctx: RuleContext) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(axes, starts, ends, steps) from inputs (opset 10+) or attributes; None when not constant."""
    r = ctx.rank(ctx.node.inputs[0])
    if ctx.graph.opset >= 10:
        vals = [ctx.value(ctx.node.input(i)) for i in range(1, 5)]
        if any(v is None and ctx.node.input(i + 1) for i, v in enumerate(vals)):
            return None
        starts, ends, axes, steps = vals
    else:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    axes = list(range(len(starts))) if axes is None else [int(a) % r for a in axes]
    steps = [1] * len(axes) if steps is None else [int(s) for s in steps]
    return axes, [int(s) for s in starts], [int(e) for e in ends], steps


def resolved_range(start: int, end: int, step: int, dim: int) -> range:
    """The indices a Slice takes along an axis of size ``dim`` (numpy semantics, as ONNX specifies)."""
    return range(dim)[slice(start, end, step)]


@rule("Slice")
def slice_(ctx: RuleContext) -> None:
    """A unit-step slice: output axis ↔ input axis at offset start; other axes identity."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    params = slice_params(ctx)
    if params is None:
        return
    sliced = {a: (s, e, st) for a, s, e, st in zip(*params)}
    shape = ctx.shape(x)
    for k in range(len(shape)):
        if k not in sliced:
            ctx.couple_axes(y, k, x, k)
            continue
        taken = resolved_range(*sliced[k], shape[k])
        if taken.step == 1 and len(taken) > 0:
            ctx.couple_axes(y, k, x, k, Offset(taken.start))
        else:
            ctx.freeze_axis(x, k, "Slice with a step other than 1")


@rule("Gather")
def gather(ctx: RuleContext) -> None:
    """Axes other than the gathered one pass through (around the indices' axes); the gathered axis is frozen."""
    x, idx, y = ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0]
    r, ri = ctx.rank(x), ctx.rank(idx)
    axis = int(ctx.attr("axis", 0)) % r
    for k in range(r):
        if k == axis:
            ctx.freeze_axis(x, k, "indexed by Gather")
        else:
            ctx.couple_axes(x, k, y, k if k < axis else k - 1 + ri)


@rule("Pin")
def pin(ctx: RuleContext) -> None:
    """A frontend's marker (torch: the head dimension at every attention): every axis passes, those in ``axes`` are
    frozen with ``reason``. It computes nothing (an identity); ONNX files do not contain it."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    pinned = {int(a) % r for a in ctx.attr("axes", ())}
    for k in range(r):
        if k in pinned:
            ctx.freeze_axis(x, k, str(ctx.attr("reason", "pinned by the frontend")))
            ctx.freeze_axis(y, k, str(ctx.attr("reason", "pinned by the frontend")))
        else:
            ctx.couple_axes(x, k, y, k)


@rule("Tie")
def tie(ctx: RuleContext) -> None:
    """A frontend's marker: input i passes to output i, and channel i of every input's ``axis`` goes together.
    torch.export's equal pieces of ``split(x, size)`` / ``chunk``, whose sizes the module's own code recomputes from
    the pruned width, so each piece must keep the same channels. An identity; ONNX files do not contain it."""
    first, axis = ctx.node.inputs[0], int(ctx.attr("axis"))
    for x, y in zip(ctx.node.inputs, ctx.node.outputs):
        for k in range(ctx.rank(x)):
            ctx.couple_axes(x, k, y, k)
        if x != first:
            ctx.couple_axes(x, axis, first, axis)


@rule("Constant")
def constant(ctx: RuleContext) -> None:
    """A tensor the frontend fixed: every axis frozen, so nothing the module computes at run time is ever sliced.
    torch.export: a computation of literals and non-persistent buffers alone, a ``new_full``."""
    for y in ctx.node.outputs:
        for k in range(ctx.rank(y)):
            ctx.freeze_axis(y, k, "a constant the module computes itself")

"""Element-wise ops: unary activations and numpy-broadcasting n-ary ops.

Every axis of the output corresponds index-for-index to the same axis of each input that has the full size;
an input axis of size 1 that is broadcast cannot shrink and is frozen.
"""

from __future__ import annotations

from graphprune.channels.rules.base import RuleContext, rule

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Mish", "Gelu", "Erf",
    "Softplus", "Softsign", "Elu", "Selu", "Celu", "ThresholdedRelu", "Swish", "Exp", "Log", "Sqrt",
    "Reciprocal", "Neg", "Abs", "Sin", "Cos", "Tan", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN",
    "IsInf", "Shrink", "Identity", "Cast",
)


@rule(*UNARY)
def unary(ctx: RuleContext) -> None:
    """Output axis k ↔ input axis k."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    for k in range(ctx.rank(y)):
        ctx.couple_axes(x, k, y, k)


@rule("Clip")
def clip(ctx: RuleContext) -> None:
    """Like a unary op; min / max are scalars."""
    unary(ctx)


@rule("Dropout")
def dropout(ctx: RuleContext) -> None:
    """Identity at inference; the optional mask output follows the data."""
    unary(ctx)
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        for k in range(ctx.rank(ctx.node.outputs[1])):
            ctx.couple_axes(ctx.node.inputs[0], k, ctx.node.outputs[1], k)


def couple_broadcast(ctx: RuleContext, inputs: list[str], output: str, out_axes: range | None = None) -> None:
    """numpy broadcasting of ``inputs`` to ``output``, right-aligned, over ``out_axes`` (default: all)."""
    out_shape = ctx.shape(output)
    r = len(out_shape)
    axes = range(r) if out_axes is None else out_axes
    for name in inputs:
        shape = ctx.shape(name)
        for k, dim in enumerate(shape):
            ok = k + r - len(shape)
            if ok not in axes:
                continue
            if dim == out_shape[ok]:
                ctx.couple_axes(name, k, output, ok)
            elif dim == 1:
                ctx.freeze_axis(name, k, "size-1 axis broadcast by " + ctx.node.op)


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "Mod",
      "And", "Or", "Xor", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "BitShift")
def broadcast(ctx: RuleContext) -> None:
    """Each input axis ↔ the output axis it is broadcast to (size-1 axes frozen)."""
    couple_broadcast(ctx, [t for t in ctx.node.inputs if t], ctx.node.outputs[0])


@rule("Expand")
def expand(ctx: RuleContext) -> None:
    """Broadcast to a constant shape: axes of equal size pass through; axes broadcast from size 1 (or added in
    front) take their size from the shape constant and stay. The emitter rewrites the shape (F.normalize's
    ``expand_as`` in Swin v2 attention, per-channel gates expanded over the feature map). With the ``query_heads``
    option an axis broadcast from size 1 is left free instead: its copies are identical, so dropping the same
    copies wherever they are read is exact (``repeat_kv``: query heads inside each KV group)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    if ctx.value(ctx.node.input(1)) is None:
        return  # a shape computed at run time: everything frozen by default
    out_shape, shape = ctx.shape(y), ctx.shape(x)
    lead = len(out_shape) - len(shape)
    for k, dim in enumerate(shape):
        if dim == out_shape[k + lead]:
            ctx.couple_axes(x, k, y, k + lead)
            continue
        ctx.freeze_axis(x, k, "size-1 axis broadcast by Expand")
        if ctx.query_heads:
            ctx.leave(ctx.space(y, k + lead))
        else:
            ctx.freeze_axis(y, k + lead, "broadcast from a size-1 axis by Expand")
    for k in range(lead):
        ctx.freeze_axis(y, k, "added by Expand")

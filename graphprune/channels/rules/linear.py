"""Gemm and MatMul: the contracted axis of both operands shrinks together; the free axes follow the output."""

from __future__ import annotations

from graphprune.channels.layers import operands
from graphprune.channels.rules.base import RuleContext, rule
from graphprune.channels.rules.elementwise import couple_broadcast


@rule("Gemm")
def gemm(ctx: RuleContext) -> None:
    """Y = op(A)·op(B) + C: K of A ↔ K of B; M of A ↔ Y[0]; N of B ↔ Y[1]; C broadcast to Y."""
    a, b, y = ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0]
    ops = operands(ctx.node, ctx.rank)
    ctx.couple_axes(a, ops.x_axis, b, ops.w_in)
    ctx.couple_axes(a, 1 - ops.x_axis, y, 0)
    ctx.couple_axes(b, ops.w_out, y, ops.y_axis)
    if ctx.node.input(2):
        couple_broadcast(ctx, [ctx.node.inputs[2]], y)


@rule("MatMul")
def matmul(ctx: RuleContext) -> None:
    """A[…,M,K]·B[…,K,N]: K ↔ K, M ↔ Y[-2], N ↔ Y[-1], batch axes broadcast (1-D operands: frozen)."""
    matmul_channels(ctx, ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0])


def matmul_channels(ctx: RuleContext, a: str, b: str, y: str) -> None:
    """The couplings of ``y = a @ b``, whichever op computes it (MatMul, or the quantized MatMulInteger /
    QLinearMatMul, whose second operand sits at another input)."""
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    if ra < 2 or rb < 2:
        return
    ctx.couple_axes(a, -1, b, -2)
    ctx.couple_axes(a, -2, y, -2)
    ctx.couple_axes(b, -1, y, -1)
    for name, r in ((a, ra), (b, rb)):
        shape, out = ctx.shape(name), ctx.shape(y)
        for k in range(r - 2):
            ok = k + ry - r
            if shape[k] == out[ok]:
                ctx.couple_axes(name, k, y, ok)
            elif shape[k] == 1:
                ctx.freeze_axis(name, k, "size-1 batch axis broadcast by MatMul")

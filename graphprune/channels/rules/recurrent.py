"""LSTM, GRU and RNN: the hidden size shrinks in every gate at once.

A virtual space of ``hidden_size`` atoms is the hidden unit. Unit h owns row g·H + h of W and R for every
gate g, column h of R, both biases of every gate, the peepholes, and position h of Y, Y_h, Y_c and the initial
states. The input size couples X's feature axis with W's. Time and direction axes are frozen (a time step
feeds the next one). The emitter rewrites ``hidden_size``. onnxruntime's int8 ``com.microsoft:DynamicQuantizeLSTM``
(``quantize_dynamic`` of an LSTM) couples the same way, its W and R stored transposed.
"""

from __future__ import annotations

import numpy as np

from graphprune.channels.rules.base import Gather, RuleContext, Space, rule

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def modulo(ctx: RuleContext, name: str | None, axis: int, hidden: Space, h: int) -> None:
    """Every position of ``name``'s ``axis`` (gates stacked as blocks of h) ↔ its hidden unit."""
    if name:
        n = ctx.shape(name)[axis]
        ctx.couple(ctx.space(name, axis), hidden, Gather(np.arange(n) % h))


@rule("LSTM", "GRU", "RNN")
def recurrent(ctx: RuleContext) -> None:
    """Hidden units ↔ gate rows of W, R, B, columns of R, and the last axis of Y, Y_h, Y_c and initial states."""
    node = ctx.node
    h = int(ctx.attr("hidden_size"))
    hidden = ctx.virtual("hidden", h)
    x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
    ctx.couple_axes(x, 2, w, 2)
    modulo(ctx, w, 1, hidden, h)
    modulo(ctx, r, 1, hidden, h)
    ctx.couple(ctx.space(r, 2), hidden)
    modulo(ctx, node.input(3), 1, hidden, h)
    modulo(ctx, node.input(7) if node.op == "LSTM" else None, 1, hidden, h)
    states = [node.input(5)] + ([node.input(6)] if node.op == "LSTM" else [])
    for name in [*states, *node.outputs[1:]]:
        if name:
            ctx.couple(ctx.space(name, 2), hidden)
    if node.outputs[0]:
        ctx.couple(ctx.space(node.outputs[0], 3), hidden)


QUANTIZED_WEIGHT_ZERO_POINT = ("DynamicQuantizeLSTM whose weight zero point is not a constant 0: a removed weight "
                               "entry set to 0 would still contribute (0 − zero point)")


@rule("com.microsoft:DynamicQuantizeLSTM")
def dynamic_quantize_lstm(ctx: RuleContext) -> None:
    """As LSTM, with W (dir, input, 4H) and R (dir, H, 4H) transposed; per-row scales / zero points ↔ hidden.

    onnxruntime's int8 LSTM (``quantize_dynamic`` of an LSTM). Scales and zero points per gate row are
    ``(dir, 4H)``; per direction, ``(dir,)``, they have no channel axis. It quantizes X and h per run over a range
    widened to include 0, so the masked original's zeros change neither. Frozen where a weight zero point is not a
    constant 0: the masked original zeroes removed weight entries, which contribute nothing only at the zero point."""
    node = ctx.node
    h = int(ctx.attr("hidden_size"))
    hidden = ctx.virtual("hidden", h)
    x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
    zero_points = [node.input(9), node.input(11)]
    if any(z is None or (v := ctx.value(z)) is None or np.any(v) for z in zero_points):
        ctx.freeze(hidden, QUANTIZED_WEIGHT_ZERO_POINT)
        ctx.freeze_axis(x, 2, QUANTIZED_WEIGHT_ZERO_POINT)
    ctx.couple_axes(x, 2, w, 1)
    modulo(ctx, w, 2, hidden, h)
    modulo(ctx, r, 2, hidden, h)
    ctx.couple(ctx.space(r, 1), hidden)
    modulo(ctx, node.input(3), 1, hidden, h)
    modulo(ctx, node.input(7), 1, hidden, h)
    for p in node.inputs[8:12]:
        if p and ctx.rank(p) == 2:
            modulo(ctx, p, 1, hidden, h)
    for name in [node.input(5), node.input(6), *node.outputs[1:]]:
        if name:
            ctx.couple(ctx.space(name, 2), hidden)
    if node.outputs[0]:
        ctx.couple(ctx.space(node.outputs[0], 3), hidden)

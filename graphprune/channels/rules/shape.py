"""Shape ops: Flatten, Reshape, Transpose, Squeeze, Unsqueeze.

A reshape is read as a sequence of segments where a run of input axes and a run of output axes have the same
product. One-to-one segments are identity; a merge (C, H, W → C·H·W) couples the outermost input axis to the
merged axis by a block map; a split (C → G, C/G) couples the input to the outermost output axis by a block
map. The other axes of a merge or split have no map and are frozen, so only whole blocks can go. Where the
outermost axis is frozen for another reason (a channel shuffle's transpose, an RNN's direction axis), channel
analysis switches the segment to its innermost axis instead (see :func:`couple_merged`). With the ``query_heads``
option a merge couples through an axis an Expand broadcast from size 1 (``repeat_kv``'s query heads per KV group),
the other axes of the run kept whole.
"""

from __future__ import annotations

import numpy as np

from graphprune.channels.rules.base import Block, Gather, RuleContext, Space, rule


def segments(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair runs of non-1 axes of ``a`` and ``b`` with equal products (size-1 axes are skipped)."""
    ia = [k for k, d in enumerate(a) if d != 1]
    ib = [k for k, d in enumerate(b) if d != 1]
    out, i, j = [], 0, 0
    while i < len(ia) and j < len(ib):
        ra, rb = [ia[i]], [ib[j]]
        pa, pb = a[ia[i]], b[ib[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(ia):
                ra.append(ia[i]); pa *= a[ia[i]]; i += 1
            elif pb < pa and j < len(ib):
                rb.append(ib[j]); pb *= b[ib[j]]; j += 1
            else:
                return out
        out.append((ra, rb))
    return out


PASS_THROUGH = ("Identity", "Cast")  # ops between an Expand and the Reshape that merges its copies (torch's clone)


def copy_axes(ctx: RuleContext, tensor: str) -> set[int]:
    """Axes of ``tensor`` that an Expand broadcast from size 1 (read through Identity / Cast): identical copies."""
    node = ctx.graph.producers.get(tensor)
    while node is not None and node.op in PASS_THROUGH:
        node = ctx.graph.producers.get(node.inputs[0])
    if node is None or node.op != "Expand":
        return set()
    x, y = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    lead = len(y) - len(x)
    return {k + lead for k, d in enumerate(x) if d == 1 and y[k + lead] > 1}


def couple_reshape(ctx: RuleContext, x: str, y: str) -> None:
    """Couple ``x`` to ``y`` (same element count) by the segment rule above."""
    a, b = ctx.shape(x), ctx.shape(y)
    copies = copy_axes(ctx, x) if ctx.query_heads else set()
    for i, (ra, rb) in enumerate(segments(a, b)):
        if len(ra) == 1 and len(rb) == 1:
            ctx.couple_axes(x, ra[0], y, rb[0])
        elif len(rb) == 1:
            copy = next((pos for pos, k in enumerate(ra) if pos > 0 and k in copies), None)
            couple_merged(ctx, f"seg{i}", (x, ra, a), (y, rb[0]), copy)
        elif len(ra) == 1:
            couple_merged(ctx, f"seg{i}", (y, rb, b), (x, ra[0]))
        # many-to-many: no map; the axes stay unmentioned and are frozen


def couple_merged(ctx: RuleContext, label: str, many: tuple[str, list[int], tuple[int, ...]], one: tuple[str, int],
                  copy: int | None = None) -> None:
    """Couple the single axis ``one`` with one axis of the run ``many``: the outermost by default, else the
    innermost or (runs of three or more) a middle one; ``copy``: the position in the run of broadcast copies that
    the ``query_heads`` option couples instead (every group's j-th query head), the other axes frozen.

    Outer: outer index i ↔ the block [i·s, i·s+s) of the single axis (whole heads, whole groups).
    Inner: inner index j ↔ every position ≡ j mod n (the same offset in every block: channel shuffle,
    bidirectional RNN outputs). Middle: index j of axis k ↔ every position whose k-th digit (in the run's
    mixed radix) is j (Swin's packed q/k/v, split 3 × heads × head_dim: head j in each of q, k and v). Each is
    exact; channel analysis picks one that is not frozen elsewhere (middle ones before the innermost)."""
    name, axes, shape = many
    target, axis = one
    sizes = [shape[k] for k in axes]
    total = int(np.prod(sizes, dtype=np.int64))
    if copy is not None:
        for k in axes:
            if k != axes[copy]:
                ctx.freeze(Space(name, k), "kept whole: merged with broadcast copies, which go instead (query_heads: "
                                           "query heads inside each key / value group)")
    chosen = ctx.choice(label, "outer" if copy is None else "inner" if copy == len(axes) - 1 else str(copy))
    pos = 0 if chosen == "outer" else len(axes) - 1 if chosen == "inner" else int(chosen)
    if pos == 0:
        ctx.couple(Space(name, axes[0]), ctx.space(target, axis), Block(total // sizes[0]))
    else:
        after = int(np.prod(sizes[pos + 1:], dtype=np.int64))
        ctx.couple(ctx.space(target, axis), Space(name, axes[pos]), Gather(np.arange(total) // after % sizes[pos]))
    if chosen == "outer":  # switching happens once per segment: the alternatives are offered from the default
        for k in (*range(1, len(axes) - 1), len(axes) - 1):
            option = "inner" if k == len(axes) - 1 else str(k)
            ctx.alternative(label, Space(name, axes[0]), Space(name, axes[k]), option, ctx.space(target, axis))


@rule("Flatten")
def flatten(ctx: RuleContext) -> None:
    """(d0…dk−1, dk…) → (∏ d0…dk−1, ∏ dk…): outermost axis of each half ↔ its half by a block map."""
    couple_reshape(ctx, ctx.node.inputs[0], ctx.node.outputs[0])


@rule("Reshape")
def reshape(ctx: RuleContext) -> None:
    """Segments of equal product; needs a constant shape (folded). The emitter rewrites the constant."""
    if ctx.value(ctx.node.input(1)) is None:
        return  # a shape computed at run time: everything frozen by default
    couple_reshape(ctx, ctx.node.inputs[0], ctx.node.outputs[0])


@rule("Transpose")
def transpose(ctx: RuleContext) -> None:
    """Output axis k ↔ input axis perm[k]."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r = ctx.rank(x)
    perm = ctx.attr("perm") or tuple(reversed(range(r)))
    for k, p in enumerate(perm):
        ctx.couple_axes(x, int(p), y, k)


def listed_axes(ctx: RuleContext, r: int) -> list[int] | None:
    """``axes`` from the attribute (old opsets) or the second input (opset 13+), normalised to rank ``r``."""
    axes = ctx.value(ctx.node.input(1)) if ctx.graph.opset >= 13 else ctx.attr("axes")
    return None if axes is None else sorted(int(a) % r for a in axes)


@rule("Squeeze")
def squeeze(ctx: RuleContext) -> None:
    """The remaining axes pass through in order; the squeezed ones have size 1."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    shape = ctx.shape(x)
    axes = listed_axes(ctx, len(shape))
    if axes is None:
        axes = [k for k, d in enumerate(shape) if d == 1]
    kept = [k for k in range(len(shape)) if k not in axes]
    for j, k in enumerate(kept):
        ctx.couple_axes(x, k, y, j)


@rule("Unsqueeze")
def unsqueeze(ctx: RuleContext) -> None:
    """The input axes pass through in order around the inserted size-1 axes."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    r_out = ctx.rank(y)
    axes = listed_axes(ctx, r_out)
    if axes is None:
        return
    kept = [k for k in range(r_out) if k not in axes]
    for i, k in enumerate(kept):
        ctx.couple_axes(x, i, y, k)

"""Per-op fixes for the ONNX emitter: attributes and constant inputs that encode channel counts.

Each fix gets the graphsurgeon node (inputs and outputs already resized) and a context that knows the
original shapes and the kept indices. Fixes never edit a shared constant: they attach a new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx_graphsurgeon as gs

from graphprune.channels.rules.tensor import resolved_range

if TYPE_CHECKING:
    from graphprune.emit.onnx import FixContext


def fresh_constant(node: gs.Node, label: str, values) -> gs.Constant:
    return gs.Constant(f"{node.name}::{label}", np.asarray(values, np.int64))


def set_input(node: gs.Node, index: int, tensor: gs.Tensor) -> None:
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = tensor


def computed(node: gs.Node, index: int) -> bool:
    """Whether input ``index`` is computed at run time: only in a model folded without pinning its dynamic
    dimensions (see :mod:`graphprune.dynamic`), where such a shape follows the pruned tensors by itself or the
    verification that always follows says it does not."""
    return index < len(node.inputs) and bool(node.inputs[index].name) and not isinstance(node.inputs[index], gs.Constant)


def fix_group(node: gs.Node, ctx: "FixContext") -> None:
    """Grouped conv: ``group`` becomes the number of kept groups."""
    kept = ctx.kept_virtual(f"{node.name}#groups")
    if kept is not None:
        node.attrs["group"] = len(kept)


def fix_num_groups(node: gs.Node, ctx: "FixContext") -> None:
    """GroupNormalization: ``num_groups`` becomes the number of kept groups."""
    kept = ctx.kept_virtual(f"{node.name}#groups")
    if kept is not None:
        node.attrs["num_groups"] = len(kept)


def fix_split(node: gs.Node, ctx: "FixContext") -> None:
    """Split: write the new sizes explicitly (input from opset 13, attribute before)."""
    x = node.inputs[0].name
    axis = int(node.attrs.get("axis", 0)) % len(ctx.graph.shape(x))
    if all(ctx.kept(o.name, axis) is None for o in node.outputs):
        return
    sizes = [ctx.new_shape(o.name)[axis] for o in node.outputs]
    if ctx.opset >= 13:
        set_input(node, 1, fresh_constant(node, "split", sizes))
        node.attrs.pop("num_outputs", None)
    else:
        node.attrs["split"] = sizes


def fix_slice(node: gs.Node, ctx: "FixContext") -> None:
    """Slice: the new start is the number of kept input atoms before the old one."""
    x, y = node.inputs[0].name, node.outputs[0].name
    shape = ctx.graph.shape(x)
    if shape is None or not ctx.changed(x) and not ctx.changed(y):
        return  # unknown to the analysis: a sub-graph only an unpinned fold has (see graphprune.dynamic)
    if ctx.opset >= 10:
        if any(computed(node, i) for i in range(1, 5)):
            return
        vals = [None if i >= len(node.inputs) or not node.inputs[i].name else np.asarray(node.inputs[i].values)
                for i in range(1, 5)]
        starts, ends, axes, steps = vals
    else:
        starts, ends, axes, steps = (node.attrs.get("starts"), node.attrs.get("ends"), node.attrs.get("axes"), None)
    axes = list(range(len(starts))) if axes is None else [int(a) % len(shape) for a in axes]
    steps = [1] * len(axes) if steps is None else [int(s) for s in steps]
    new_starts, new_ends, changed = [], [], False
    for a, s, e, st in zip(axes, starts, ends, steps):
        taken = resolved_range(int(s), int(e), st, shape[a])
        kept_in, kept_out = ctx.kept(x, a), ctx.kept(y, a)
        if st != 1 or (kept_in is None and kept_out is None):
            new_starts.append(int(s)); new_ends.append(int(e))
            continue
        changed = True
        start = taken.start if kept_in is None else int(np.searchsorted(kept_in, taken.start))
        new_starts.append(start)
        new_ends.append(start + ctx.new_shape(y)[a])
    if not changed:
        return
    if ctx.opset >= 10:
        for i, (label, v) in enumerate((("starts", new_starts), ("ends", new_ends), ("axes", axes), ("steps", steps)), 1):
            set_input(node, i, fresh_constant(node, label, v))
    else:
        node.attrs.update(starts=new_starts, ends=new_ends, axes=axes)


def fix_reshape(node: gs.Node, ctx: "FixContext") -> None:
    """Reshape: explicit new sizes, keeping an original -1, and an original 0 (copy the input's dimension) where
    the input and output still agree there: both keep the model's dynamic dimensions dynamic."""
    x, y = node.inputs[0].name, node.outputs[0].name
    if not ctx.changed(y) and not ctx.changed(x):
        return
    x_new = ctx.new_shape(x)
    rewrite_shape(node, ctx, lambda i, o, d: o if o == -1 or (o == 0 and i < len(x_new) and x_new[i] == d) else d)


def rewrite_shape(node: gs.Node, ctx: "FixContext", entry: Callable[[int, int, int], int]) -> None:
    """Write the shape input of a Reshape / Expand for the new output sizes: position i (right-aligned to the
    output) becomes ``entry(i, old value, new output size)``. A shape computed at run time is fixed in its
    ``Concat`` (see :func:`fix_concatenated_shape`) instead."""
    if computed(node, 1):
        fix_concatenated_shape(node, ctx)
        return
    old = np.asarray(node.inputs[1].values).reshape(-1)
    new_y = ctx.new_shape(node.outputs[0].name)
    lead = len(new_y) - len(old)
    node.inputs[1] = fresh_constant(node, "shape", [entry(i, int(o), new_y[i + lead]) for i, o in enumerate(old)])


def fix_concatenated_shape(node: gs.Node, ctx: "FixContext") -> None:
    """Reshape / Expand whose shape is computed at run time as ``Concat`` of pieces (an unpinned fold of
    ``x.view(x.size(0), heads, -1)``, or of an RNN's zero initial state for a dynamic batch):
    the constant pieces that hold a size the plan changed get the new size. Only when this Reshape is the
    Concat's one reader and every piece's length is known; otherwise the shape is left to verification."""
    shape = node.inputs[1]
    if len(shape.inputs) != 1 or shape.inputs[0].op != "Concat" or len(shape.outputs) != 1:
        return
    concat = shape.inputs[0]
    lengths = [len(t.values.reshape(-1)) if isinstance(t, gs.Constant) else
               (int(t.shape[0]) if t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], int) else None)
               for t in concat.inputs]
    if None in lengths:
        return
    y = node.outputs[0].name
    old_y, new_y = ctx.graph.shape(y), ctx.new_shape(y)
    start = 0
    for i, (piece, n) in enumerate(zip(list(concat.inputs), lengths)):
        if isinstance(piece, gs.Constant):
            vals = np.asarray(piece.values).reshape(-1)
            new = [int(v) if int(v) in (-1, 0) or old_y[start + j] == new_y[start + j] else new_y[start + j]
                   for j, v in enumerate(vals)]
            if new != vals.tolist():
                concat.inputs[i] = gs.Constant(f"{node.name}::shape{i}", np.asarray(new, vals.dtype))
        start += n


def fix_expand(node: gs.Node, ctx: "FixContext") -> None:
    """Expand: the new output sizes, keeping a 1 (take the input's size) where there was one."""
    if ctx.changed(node.outputs[0].name):
        rewrite_shape(node, ctx, lambda i, o, d: 1 if o == 1 else d)


def fix_resize(node: gs.Node, ctx: "FixContext") -> None:
    """Resize given by ``sizes``: write the new output sizes."""
    y = node.outputs[0].name
    if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name and ctx.changed(y):
        node.inputs[3] = fresh_constant(node, "sizes", ctx.new_shape(y))


def fix_hidden_size(node: gs.Node, ctx: "FixContext") -> None:
    """LSTM / GRU / RNN: ``hidden_size`` becomes the number of kept hidden units."""
    kept = ctx.kept_virtual(f"{node.name}#hidden")
    if kept is not None:
        node.attrs["hidden_size"] = len(kept)


FIXES: dict[str, Callable[[gs.Node, "FixContext"], None]] = {
    "LSTM": fix_hidden_size,
    "GRU": fix_hidden_size,
    "RNN": fix_hidden_size,
    "DynamicQuantizeLSTM": fix_hidden_size,  # com.microsoft's int8 LSTM (channels/rules/recurrent.py)
    "Conv": fix_group,
    "ConvTranspose": fix_group,
    "ConvInteger": fix_group,  # quantized convs: the same rule (channels/rules/quant.py), the same attribute
    "QLinearConv": fix_group,
    "GroupNormalization": fix_num_groups,
    "Split": fix_split,
    "Slice": fix_slice,
    "Reshape": fix_reshape,
    "Expand": fix_expand,
    "Resize": fix_resize,
}

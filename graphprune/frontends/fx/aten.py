"""ATen ops (the graphs torch.export captures) in the one op table: most reuse the torch-level lowerings of
:mod:`.lowering` with their positional arguments named as the lowering expects; the ones below have no torch-level
twin there (``aten.slice``, ``aten.select``, ``scaled_dot_product_attention`` …).

Conventions, as for fx: IR nodes with ONNX op names at opset 17; ``rsqrt`` is ``Sqrt`` → ``Reciprocal`` (ONNX has no
Rsqrt, and it is what the RMSNorm recogniser reads); attention is written out (``MatMul(Q, Kᵀ)`` · scale, the mask,
``Softmax``, ``MatMul(·, V)``) so the MatMul rules couple heads and head_dim as in an ONNX export.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import fx

from graphprune.frontends.fx.lowering import (Canon, Unsupported, axis_of, batch_norm_fn, binary, cast, clamp, concat,
                                            conv_fn, embedding_fn, expand, flatten, group_norm_fn, hardtanh_fn,
                                            identity, int64, layer_norm_fn, linear_fn, matmul, matrix_transpose,
                                            pad_fn, permute, pool, reduce, reshape, resize, softmax, split_call,
                                            squeeze, transpose, unary, unbind, unflatten, unsqueeze, where)

aten = torch.ops.aten
X = ("input",)


def slice_(lw, c) -> None:
    """``aten.slice(x, dim, start, end, step)``: a Slice (ends past the axis, as ATen writes them, are clipped)."""
    x = lw.input(c.arg("input"))
    shape = lw.shape(x)
    axis = axis_of(lw.value(c.arg("dim", 0)), len(shape))
    start, end, step = (lw.value(c.arg(k)) for k in ("start", "end", "step"))
    taken = range(shape[axis])[slice(start, end, 1 if step is None else step)]
    if taken == range(shape[axis]):
        lw.emit("Identity", [x], [lw.out()])
        return
    ins = [x, lw.const("starts", int64([taken.start])), lw.const("ends", int64([taken.stop])),
           lw.const("axes", int64([axis])), lw.const("steps", int64([taken.step]))]
    lw.emit("Slice", ins, [lw.out()])


def select(lw, c) -> None:
    """``aten.select(x, dim, index)``: a Gather of one index (the axis goes)."""
    x = lw.input(c.arg("input"))
    shape = lw.shape(x)
    axis = axis_of(lw.value(c.arg("dim")), len(shape))
    index = int(lw.value(c.arg("index"))) % shape[axis]
    lw.emit("Gather", [x, lw.const("index", np.asarray(index, np.int64))], [lw.out()], axis=axis)


def split_pieces(lw, c) -> None:
    """``aten.split`` / ``split_with_sizes``: a Split; pieces of one size are then Tied (``Tie``: piece k keeps the
    channels piece 0 keeps). An ATen graph records ``x.chunk(2, 1)`` as ``split(x, 8, 1)``: the user's module
    recomputes the pieces from the pruned width, so they must stay equal, as in YOLO's ``C2f``; a literal size in
    ``forward`` (``x.split(8, 1)``) cannot follow the plan either way, and verification says so."""
    x, axis, outs, sizes = split_call(lw, c)
    equal = len(outs) > 1 and len(set(sizes)) == 1
    pieces = [lw.tmp("piece", lw.shape(o), lw.dtype(o)) for o in outs] if equal else outs
    lw.emit("Split", [x, lw.const("split", int64(sizes))], pieces, axis=axis)
    if equal:
        lw.emit("Tie", pieces, outs, axis=axis)


def new_filled(fill: float | None) -> Canon:
    """``x.new_full(size, value)`` / ``new_zeros`` / ``new_ones``: a constant of the literal size (``x`` only lends
    its dtype and device, as YOLO's anchor strides ``feats[0].new_full((h * w, 1), stride)``), so it touches
    nothing of ``x``."""
    def lower(lw, c):
        info = lw.values[c.node.name]
        value = lw.value(c.arg("fill_value")) if fill is None else fill
        if not isinstance(value, (int, float)):
            raise Unsupported("fill value not a number")
        lw.constant_node(c.node, torch.full(tuple(lw.value(c.arg("size"))), value, dtype=info.dtype))
    return Canon("Constant", lower, ("input", "size", "fill_value"))


def rsqrt(lw, c) -> None:
    x = lw.input(c.arg("input"))
    root = lw.tmp("sqrt", lw.shape(x), lw.dtype(x))
    lw.emit("Sqrt", [x], [root])
    lw.emit("Reciprocal", [root], [lw.out()])


def rsub(lw, c) -> None:
    """``aten.rsub(x, other, alpha)`` = ``other − alpha · x``."""
    if c.arg("alpha", 1) != 1:
        raise Unsupported("rsub with alpha")
    a, b = c.arg("input"), c.arg("other")
    lw.emit("Sub", [lw.input(b, like=a), lw.input(a, like=b)], [lw.out()])


def addmm(lw, c) -> None:
    """``aten.addmm(bias, x, W)`` = ``x @ W + bias``: a Gemm (W stored (in, out), as GPT-2's Conv1D keeps it)."""
    if c.arg("beta", 1) != 1 or c.arg("alpha", 1) != 1:
        raise Unsupported("addmm with alpha / beta")
    lw.emit("Gemm", [lw.input(c.arg("mat1")), lw.input(c.arg("mat2")), lw.input(c.arg("input"))], [lw.out()])


def masked_fill(lw, c) -> None:
    """``aten.masked_fill(x, mask, value)`` = ``Where(mask, value, x)``."""
    x = lw.input(c.arg("input"))
    lw.emit("Where", [lw.input(c.arg("mask")), lw.input(c.arg("value"), like=x), x], [lw.out()])


def to(lw, c) -> None:
    """``aten.to`` / ``_to_copy``: a Cast when the element type changes, else an Identity."""
    x = lw.input(c.arg("input"))
    y = lw.out()
    lw.emit("Cast" if lw.dtype(x) != lw.dtype(y) else "Identity", [x], [y])


def type_as(lw, c) -> None:
    """``aten.type_as(x, other)``: ``other`` lends only its dtype, so a folded ``x`` (YOLO's anchor grid,
    ``arange(w).type_as(feats[0])``) stays a constant and what is computed from it alone is folded too."""
    x = c.arg("input")
    if isinstance(x, fx.Node) and x.name in lw.folded:
        lw.constant_node(c.node, lw.folded[x.name].to(lw.values[c.node.name].dtype))
        return
    cast(lw, c)


def native_batch_norm(lw, c) -> None:
    """``_native_batch_norm_legit_no_training`` → (output, saved mean, saved inverse std): only the output is
    computed (the saved statistics are empty in inference)."""
    outs = lw.outputs_of(c.node)
    ins = [lw.input(c.arg(k)) for k in ("input", "weight", "bias", "running_mean", "running_var")]
    lw.emit("BatchNormalization", ins, [outs[0]], epsilon=float(lw.value(c.arg("eps", 1e-5))))


def attention(lw, c) -> None:
    """``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)`` written out:
    ``Softmax(q · kᵀ · scale + mask) · v``; grouped-query K / V repeated per query head first, as ``repeat_kv``."""
    if c.arg("dropout_p", 0.0):
        raise Unsupported("attention dropout")
    q, k, v = (pin_head_dim(lw, lw.input(c.arg(name))) for name in ("query", "key", "value"))
    qs, ks, vs = lw.shape(q), lw.shape(k), lw.shape(v)
    if len(qs) < 3 or len(ks) != len(qs) or len(vs) != len(qs):
        raise Unsupported("attention operands of unequal rank")
    if c.arg("enable_gqa", False) and ks[-3] != qs[-3]:
        k, v = (repeat_heads(lw, t, qs[-3]) for t in (k, v))
        ks, vs = lw.shape(k), lw.shape(v)
    dtype = lw.dtype(q)
    perm = list(range(len(ks)))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    kt = lw.tmp("key_t", tuple(ks[p] for p in perm), dtype)
    lw.emit("Transpose", [k], [kt], perm=perm)
    scores_shape = (*qs[:-1], ks[-2])
    scores = lw.tmp("scores", scores_shape, dtype)
    lw.emit("MatMul", [q, kt], [scores])
    scale = c.arg("scale")
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(lw.value(scale))
    scaled = lw.tmp("scaled", scores_shape, dtype)
    lw.emit("Mul", [scores, lw.const("scale", np.asarray(scale, dtype))], [scaled])
    mask = c.arg("attn_mask")
    if c.arg("is_causal", False):
        causal = np.tril(np.ones(scores_shape[-2:], bool))
        masked = lw.tmp("causal", scores_shape, dtype)
        lw.emit("Where", [lw.const("causal_mask", causal), scaled, lw.const("minus_inf", np.asarray(-np.inf, dtype))],
                [masked])
        scaled = masked
    if mask is not None:
        m = lw.input(mask)
        masked = lw.tmp("masked", scores_shape, dtype)
        if lw.dtype(m) == np.bool_:
            lw.emit("Where", [m, scaled, lw.const("minus_inf", np.asarray(-np.inf, dtype))], [masked])
        else:
            lw.emit("Add", [scaled, m], [masked])
        scaled = masked
    probs = lw.tmp("probs", scores_shape, dtype)
    lw.emit("Softmax", [scaled], [probs], axis=len(scores_shape) - 1)
    lw.emit("MatMul", [probs, v], [lw.out()])


HEAD_DIM = "head dimension of an attention (rotary embeddings and the attention scale are computed from it)"


def pin_head_dim(lw, t: str) -> str:
    """``t`` through a ``Pin`` of its last axis: heads go whole or not at all, never a slice of each."""
    out = lw.tmp("pinned", lw.shape(t), lw.dtype(t))
    lw.emit("Pin", [t], [out], axes=[len(lw.shape(t)) - 1], reason=HEAD_DIM)
    return out


def repeat_heads(lw, t: str, heads: int) -> str:
    """``[B, Hk, S, E]`` → ``[B, H, S, E]``: each KV head repeated for its H / Hk query heads (Unsqueeze, Expand,
    Reshape, as Hugging Face's ``repeat_kv``), so a unit is a whole KV group with its query heads."""
    shape = lw.shape(t)
    kv, rep = shape[-3], heads // shape[-3]
    if kv * rep != heads:
        raise Unsupported("query heads not a multiple of the key / value heads")
    dtype = lw.dtype(t)
    one = lw.tmp("kv_unsqueezed", (*shape[:-2], 1, *shape[-2:]), dtype)
    lw.emit("Unsqueeze", [t, lw.const("axes", int64([len(shape) - 2]))], [one])
    wide = (*shape[:-2], rep, *shape[-2:])
    expanded = lw.tmp("kv_expanded", wide, dtype)
    lw.emit("Expand", [one, lw.const("shape", int64(wide))], [expanded])
    out = lw.tmp("kv_repeated", (*shape[:-3], heads, *shape[-2:]), dtype)
    lw.emit("Reshape", [expanded, lw.const("shape", int64((*shape[:-3], heads, *shape[-2:])))], [out])
    return out


UNARY_ATEN = {"Relu": [aten.relu], "Sigmoid": [aten.sigmoid], "Tanh": [aten.tanh], "Gelu": [aten.gelu],
              "Swish": [aten.silu], "Exp": [aten.exp], "Log": [aten.log], "Sqrt": [aten.sqrt],
              "Abs": [aten.abs], "Neg": [aten.neg], "Reciprocal": [aten.reciprocal], "Erf": [aten.erf],
              "Sin": [aten.sin], "Cos": [aten.cos], "HardSwish": [aten.hardswish], "Mish": [aten.mish],
              "HardSigmoid": [aten.hardsigmoid], "Not": [aten.logical_not, aten.bitwise_not],
              "LeakyRelu": [aten.leaky_relu], "Elu": [aten.elu], "Softplus": [aten.softplus], "Sign": [aten.sign],
              "Floor": [aten.floor], "Ceil": [aten.ceil], "Selu": [aten.selu], "Celu": [aten.celu]}
BINARY_ATEN = {"Add": [aten.add], "Sub": [aten.sub], "Mul": [aten.mul], "Div": [aten.div],
               "Max": [aten.maximum], "Min": [aten.minimum], "Greater": [aten.gt], "Less": [aten.lt],
               "GreaterOrEqual": [aten.ge], "LessOrEqual": [aten.le], "Equal": [aten.eq],
               "And": [aten.logical_and, aten.bitwise_and, aten.__and__],
               "Or": [aten.logical_or, aten.bitwise_or, aten.__or__]}


def aten_entries() -> dict[Any, Canon]:
    """The ATen part of the op table, keyed by overload packet (``aten.linear``: every overload)."""
    t: dict[Any, Canon] = {}
    for op, packets in UNARY_ATEN.items():
        for p in packets:
            t[p] = unary(op)
    for op, packets in BINARY_ATEN.items():
        for p in packets:
            t[p] = binary(op, ("input", "other", "alpha"))
    t.update({
        aten.pow: binary("Pow", ("input", "other")),
        aten.hardtanh: Canon("Clip", hardtanh_fn, ("input", "min_val", "max_val")),
        aten.constant_pad_nd: Canon("Pad", pad_fn, ("input", "pad", "value")),
        aten.clamp: Canon("Clip", clamp, ("input", "min", "max")),
        aten.rsub: Canon("Sub", rsub, ("input", "other", "alpha")),
        aten.rsqrt: Canon("Reciprocal", rsqrt),
        aten.where: Canon("Where", where, ("condition", "input", "other")),
        aten.masked_fill: Canon("Where", masked_fill, ("input", "mask", "value")),
        aten.linear: Canon("Gemm", linear_fn, ("input", "weight", "bias")),
        aten.addmm: Canon("Gemm", addmm, ("input", "mat1", "mat2", "beta", "alpha")),
        aten.matmul: Canon("MatMul", matmul, ("input", "other")), aten.mm: Canon("MatMul", matmul, ("input", "other")),
        aten.bmm: Canon("MatMul", matmul, ("input", "other")),
        aten.conv1d: conv_fn("Conv", 1), aten.conv2d: conv_fn("Conv", 2), aten.conv3d: conv_fn("Conv", 3),
        aten.embedding: Canon("Gather", embedding_fn, ("weight", "input", "padding_idx")),
        aten.layer_norm: Canon("LayerNormalization", layer_norm_fn,
                               ("input", "normalized_shape", "weight", "bias", "eps")),
        aten.group_norm: Canon("GroupNormalization", group_norm_fn, ("input", "num_groups", "weight", "bias", "eps")),
        aten._native_batch_norm_legit_no_training: Canon(
            "BatchNormalization", native_batch_norm, ("input", "weight", "bias", "running_mean", "running_var",
                                                      "momentum", "eps")),
        aten.batch_norm: Canon("BatchNormalization", batch_norm_fn,
                               ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum",
                                "eps")),
        aten.scaled_dot_product_attention: Canon("MatMul", attention,
                                                 ("query", "key", "value", "attn_mask", "dropout_p", "is_causal",
                                                  "scale", "enable_gqa")),
        aten.softmax: softmax("Softmax"), aten._softmax: softmax("Softmax"),
        aten.log_softmax: softmax("LogSoftmax"),
        aten.mean: reduce("ReduceMean"), aten.sum: reduce("ReduceSum"), aten.amax: reduce("ReduceMax"),
        aten.view: Canon("Reshape", reshape, ("input", "shape")),
        aten.reshape: Canon("Reshape", reshape, ("input", "shape")),
        aten._unsafe_view: Canon("Reshape", reshape, ("input", "shape")),
        aten.flatten: Canon("Flatten", flatten, ("input", "start_dim", "end_dim")),
        aten.unflatten: Canon("Reshape", unflatten, ("input", "dim", "sizes")),
        aten.transpose: Canon("Transpose", transpose, ("input", "dim0", "dim1")),
        aten.permute: Canon("Transpose", permute, ("input", "dims")),
        aten.t: Canon("Transpose", matrix_transpose),
        aten.unsqueeze: Canon("Unsqueeze", unsqueeze, ("input", "dim")),
        aten.squeeze: Canon("Squeeze", squeeze, ("input", "dim")),
        aten.expand: Canon("Expand", expand, ("input", "size")),
        aten.cat: Canon("Concat", concat, ("tensors", "dim")),
        aten.split: Canon("Split", split_pieces, ("input", "split_size", "dim")),
        aten.split_with_sizes: Canon("Split", split_pieces, ("input", "split_sizes", "dim")),
        aten.chunk: Canon("Split", split_pieces, ("input", "chunks", "dim")),
        aten.slice: Canon("Slice", slice_, ("input", "dim", "start", "end", "step")),
        aten.unbind: Canon("Split", unbind, ("input", "dim")),
        aten.select: Canon("Gather", select, ("input", "dim", "index")),
        aten.to: Canon("Cast", to), aten._to_copy: Canon("Cast", to),
        aten.type_as: Canon("Cast", type_as, ("input", "other")),
        aten.contiguous: Canon("Identity", identity), aten.clone: Canon("Identity", identity),
        aten.new_full: new_filled(None), aten.new_zeros: new_filled(0), aten.new_ones: new_filled(1),
        aten.upsample_nearest1d: Canon("Resize", resize), aten.upsample_nearest2d: Canon("Resize", resize),
        aten.upsample_nearest3d: Canon("Resize", resize), aten.upsample_linear1d: Canon("Resize", resize),
        aten.upsample_bilinear2d: Canon("Resize", resize), aten.upsample_trilinear3d: Canon("Resize", resize),
        aten.upsample_bicubic2d: Canon("Resize", resize),
        aten.alias: Canon("Identity", identity), aten.detach: Canon("Identity", identity),
        aten.dropout: Canon("Identity", identity), aten.lift_fresh_copy: Canon("Identity", identity),
    })
    for spatial in (1, 2, 3):
        for kind, op in (("max", "MaxPool"), ("avg", "AveragePool")):
            t[getattr(aten, f"{kind}_pool{spatial}d")] = Canon(op, pool(op, spatial))
            t[getattr(aten, f"adaptive_{kind}_pool{spatial}d")] = Canon(op, pool(op, spatial, adaptive=True))
    return t

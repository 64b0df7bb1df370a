"""How the torch frontends lower one call to IR nodes with ONNX op names (the table that picks a lowering for each
module type, function, Tensor method or ATen op is :mod:`graphprune.frontends.fx.ops`).

A :class:`Canon` is what a table entry says: the ONNX op a call becomes, the lowering that builds the IR node(s)
(inputs and attributes in ONNX conventions, opset 17), the names its positional arguments bind to, and for calls
whose literal arguments encode channel counts (view sizes, split sizes, slice bounds, ``groups``) the key of the
torch emitter's argument fix.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from graphprune.channels.rules.reduce import AXES_AS_INPUT_SINCE

if TYPE_CHECKING:
    from graphprune.frontends.fx.trace import Call, Lowering

# the IR follows opset-17 conventions: Slice / Split / Squeeze / ReduceSum take inputs, ReduceMean an axes attribute
OPSET = 17


class Unsupported(Exception):
    """Raised by a lowering that cannot express this particular call; the node becomes an Unknown op."""


Lower = Callable[["Lowering", "Call"], None]
X = ("input",)


@dataclass(frozen=True)
class Canon:
    op: str
    lower: Lower
    params: tuple[str, ...] = X
    fix: str | None = None


def axis_of(dim: Any, rank: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not -rank <= dim < max(rank, 1):
        raise Unsupported(f"dim {dim!r}")
    return dim % max(rank, 1)


def int64(values) -> np.ndarray:
    return np.asarray(values, np.int64)


# ---- element-wise -------------------------------------------------------------------------------------------


def unary(op: str) -> Canon:
    def lower(lw, c):
        lw.emit(op, [lw.input(c.arg("input"))], [lw.out()])
    return Canon(op, lower)


def binary(op: str, names: tuple[str, ...] = ("input", "other")) -> Canon:
    def lower(lw, c):
        a, b = c.arg(names[0]), c.arg(names[1])
        if c.arg("alpha", 1) != 1 or c.arg("rounding_mode") is not None:
            raise Unsupported("alpha / rounding_mode")
        lw.emit(op, [lw.input(a, like=b), lw.input(b, like=a)], [lw.out()])
    return Canon(op, lower, names)


def clip_between(lo: float | None, hi: float | None) -> Lower:
    def lower(lw, c):
        x = lw.input(c.arg("input"))
        bounds = [lw.input(v, like=x) if v is not None else "" for v in (lo, hi)]
        lw.emit("Clip", [x, *bounds], [lw.out()])
    return lower


def clamp(lw, c) -> None:
    lo, hi = lw.value(c.arg("min")), lw.value(c.arg("max"))
    if any(v is not None and not isinstance(v, (int, float)) for v in (lo, hi)):
        raise Unsupported("clamp with tensor bounds")
    clip_between(lo, hi)(lw, c)


def hardtanh_module(lw, c) -> None:
    clip_between(c.module.min_val, c.module.max_val)(lw, c)


def hardtanh_fn(lw, c) -> None:
    clip_between(lw.value(c.arg("min_val", -1.0)), lw.value(c.arg("max_val", 1.0)))(lw, c)


def where(lw, c) -> None:
    lw.emit("Where", [lw.input(c.arg("condition")), lw.input(c.arg("input")), lw.input(c.arg("other"))], [lw.out()])


def prelu(lw, c, slope: str) -> None:
    x = lw.input(c.arg("input"))
    rank, n = len(lw.shape(x)), int(np.prod(lw.shape(slope)))
    if n > 1 and rank > 2:  # PyTorch's slope acts on axis 1; ONNX broadcasting is right-aligned
        shaped = lw.tmp("slope", (n,) + (1,) * (rank - 2), lw.dtype(slope))
        lw.emit("Reshape", [slope, lw.const("slope_shape", int64((n,) + (1,) * (rank - 2)))], [shaped])
        slope = shaped
    lw.emit("PRelu", [x, slope], [lw.out()])


def identity(lw, c) -> None:
    lw.emit("Identity", [lw.input(c.arg("input"))], [lw.out()])


def cast(lw, c) -> None:
    lw.emit("Cast", [lw.input(c.arg("input"))], [lw.out()])


# ---- conv, linear, normalisation -----------------------------------------------------------------------------


def check_rank(lw, x: str, spatial: int) -> None:
    if len(lw.shape(x)) != spatial + 2:
        raise Unsupported("unbatched input")


def spatial_list(value, spatial: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * spatial


def padding(value, spatial: int) -> dict:
    """A torch conv's ``padding`` as ONNX attributes: ``pads`` (begins, then ends), or ``auto_pad`` for
    ``"same"`` (the extra at the end, as torch pads) and ``"valid"``. The data-informed methods read it to cut
    the conv's input patches; a ``padding_mode`` other than zeros is cut as if zero-padded."""
    if value == "same":
        return {"auto_pad": "SAME_UPPER"}
    if value == "valid":
        return {"auto_pad": "VALID"}
    return {"pads": spatial_list(value, spatial) * 2}


def conv_module(op: str, spatial: int) -> Lower:
    def lower(lw, c):
        m, x = c.module, lw.input(c.arg("input"))
        check_rank(lw, x, spatial)
        w, b = lw.param("weight"), lw.param("bias")
        pads = padding(m.padding, spatial) if op == "Conv" else {}
        lw.emit(op, [x, w] + ([b] if b else []), [lw.out()], group=int(m.groups), kernel_shape=list(m.kernel_size),
                strides=list(m.stride), dilations=list(m.dilation), **pads)
    return lower


CONV_PARAMS = {"Conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
               "ConvTranspose": ("input", "weight", "bias", "stride", "padding", "output_padding", "groups",
                                 "dilation")}


def conv_fn(op: str, spatial: int) -> Canon:
    """``F.conv*d`` / ``F.conv_transpose*d``: ``groups`` is a literal the emitter may have to rewrite."""
    def lower(lw, c):
        x, w = lw.input(c.arg("input")), lw.input(c.arg("weight"))
        check_rank(lw, x, spatial)
        b = c.arg("bias")
        group = int(lw.value(c.arg("groups", 1)))
        geometry = {}
        if op == "Conv":
            geometry = dict(strides=spatial_list(lw.value(c.arg("stride", 1)), spatial),
                            dilations=spatial_list(lw.value(c.arg("dilation", 1)), spatial),
                            **padding(lw.value(c.arg("padding", 0)), spatial))
        lw.emit(op, [x, w] + ([lw.input(b)] if b is not None else []), [lw.out()], group=group, **geometry)
    return Canon(op, lower, CONV_PARAMS[op], fix="conv_groups")


def linear(lw, x: str, w: str, b: str | None) -> None:
    """2-D input: Gemm(x, W, b, transB=1). N-D input: MatMul(x, Transpose(W)) (+ Add b), as ONNX exports it."""
    if len(lw.shape(x)) == 2:
        lw.emit("Gemm", [x, w] + ([b] if b else []), [lw.out()], transB=1)
        return
    if len(lw.shape(x)) < 2 or len(lw.shape(w)) != 2:
        raise Unsupported("1-D linear")
    wt = lw.tmp("weight_t", lw.shape(w)[::-1], lw.dtype(w))
    lw.emit("Transpose", [w], [wt], perm=[1, 0])
    if not b:
        lw.emit("MatMul", [x, wt], [lw.out()])
        return
    out_shape = lw.values[lw.current.name].shape
    mm = lw.tmp("matmul", out_shape, lw.dtype(x))
    lw.emit("MatMul", [x, wt], [mm])
    lw.emit("Add", [mm, b], [lw.out()])


def linear_module(lw, c) -> None:
    linear(lw, lw.input(c.arg("input")), lw.param("weight"), lw.param("bias"))


def linear_fn(lw, c) -> None:
    b = c.arg("bias")
    linear(lw, lw.input(c.arg("input")), lw.input(c.arg("weight")), lw.input(b) if b is not None else None)


def batch_norm(lw, x: str, w, b, mean, var, eps: float) -> None:
    ins = [x] + [t or "" for t in (w, b, mean, var)]
    lw.emit("BatchNormalization", ins, [lw.out()], epsilon=float(eps))


def batch_norm_module(lw, c) -> None:
    m = c.module
    batch_norm(lw, lw.input(c.arg("input")), lw.param("weight"), lw.param("bias"), lw.param("running_mean"),
               lw.param("running_var"), m.eps)


def batch_norm_fn(lw, c) -> None:
    opt = [lw.input(c.arg(k)) if c.arg(k) is not None else None
           for k in ("weight", "bias", "running_mean", "running_var")]
    batch_norm(lw, lw.input(c.arg("input")), *opt, lw.value(c.arg("eps", 1e-5)))


def layer_norm(lw, x: str, normalized_shape, w, b, eps: float) -> None:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    lw.emit("LayerNormalization", [x] + [t for t in (w, b) if t], [lw.out()], axis=-len(shape), epsilon=float(eps))


def layer_norm_module(lw, c) -> None:
    m = c.module
    layer_norm(lw, lw.input(c.arg("input")), m.normalized_shape, lw.param("weight"), lw.param("bias"), m.eps)


def layer_norm_fn(lw, c) -> None:
    w, b = (lw.input(c.arg(k)) if c.arg(k) is not None else None for k in ("weight", "bias"))
    layer_norm(lw, lw.input(c.arg("input")), lw.value(c.arg("normalized_shape")), w, b, lw.value(c.arg("eps", 1e-5)))


def group_norm_module(lw, c) -> None:
    m = c.module
    ins = [lw.input(c.arg("input"))] + [t for t in (lw.param("weight"), lw.param("bias")) if t]
    lw.emit("GroupNormalization", ins, [lw.out()], num_groups=int(m.num_groups), epsilon=float(m.eps))


def group_norm_fn(lw, c) -> None:
    ins = [lw.input(c.arg("input"))] + [lw.input(c.arg(k)) for k in ("weight", "bias") if c.arg(k) is not None]
    lw.emit("GroupNormalization", ins, [lw.out()], num_groups=int(lw.value(c.arg("num_groups"))))


def instance_norm_module(spatial: int) -> Lower:
    def lower(lw, c):
        m, x = c.module, lw.input(c.arg("input"))
        check_rank(lw, x, spatial)
        if m.track_running_stats:
            raise Unsupported("InstanceNorm with running statistics")
        ins = [x] + ([lw.param("weight"), lw.param("bias")] if m.affine else [])
        lw.emit("InstanceNormalization", ins, [lw.out()], epsilon=float(m.eps))
    return lower


# ---- pooling, resizing, padding ------------------------------------------------------------------------------


def pool(op: str, spatial: int, adaptive: bool = False) -> Lower:
    def lower(lw, c):
        m, x = c.module, lw.input(c.arg("input"))
        check_rank(lw, x, spatial)
        if (getattr(m, "return_indices", False) if m is not None else lw.value(c.arg("return_indices", False))):
            raise Unsupported("pool returning indices")
        y = lw.out()
        name = op
        if adaptive and all(d == 1 for d in lw.shape(y)[2:]):
            name = "GlobalAveragePool" if op == "AveragePool" else "GlobalMaxPool"
        lw.emit(name, [x], [y])
    return lower


def resize(lw, c) -> None:
    lw.emit("Resize", [lw.input(c.arg("input"))], [lw.out()])


def pad_with(lw, c, pad, mode: str) -> None:
    x = lw.input(c.arg("input"))
    pad = [int(p) for p in (pad if isinstance(pad, (tuple, list)) else [pad])]
    rank = len(lw.shape(x))
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    lw.emit("Pad", [x, lw.const("pads", int64(begins + ends))], [lw.out()], mode=mode)


def pad_module(lw, c) -> None:
    padding = c.module.padding
    if not isinstance(padding, (tuple, list)):
        padding = [padding] * (2 * (len(lw.shape(lw.input(c.arg("input")))) - 2))
    kind = type(c.module).__name__
    mode = next((m for p, m in (("Reflection", "reflect"), ("Replication", "edge"), ("Circular", "wrap"))
                 if kind.startswith(p)), "constant")
    pad_with(lw, c, padding, mode)


def pad_fn(lw, c) -> None:
    pad_with(lw, c, lw.value(c.arg("pad")), {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
             .get(lw.value(c.arg("mode", "constant")), "constant"))


# ---- shape ops -----------------------------------------------------------------------------------------------


def reshape_to_output(lw, x: str) -> None:
    y = lw.out()
    lw.emit("Reshape", [x, lw.const("shape", int64(lw.shape(y)))], [y])


def reshape(lw, c) -> None:
    """``view`` / ``reshape`` / ``unflatten``: a Reshape to the propagated output shape (a constant)."""
    sizes = [lw.value(a) for a in (c.arg("shape"), *c.extra) if a is not None]
    flat = [s for a in sizes for s in (a if isinstance(a, (tuple, list)) else [a])]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in flat):
        raise Unsupported("view to a dtype")
    reshape_to_output(lw, lw.input(c.arg("input")))


def unflatten(lw, c) -> None:
    reshape_to_output(lw, lw.input(c.arg("input")))


def flatten(lw, c) -> None:
    """Flatten when the result is ONNX Flatten's 2-D (prefix, suffix) split, else a Reshape."""
    x = lw.input(c.arg("input"))
    in_shape = lw.shape(x)
    default = 1 if c.module is not None else 0
    start = c.module.start_dim if c.module is not None else lw.value(c.arg("start_dim", default))
    start = axis_of(start, len(in_shape)) if in_shape else 0
    y = lw.out()
    if lw.shape(y) == (math.prod(in_shape[:start]), math.prod(in_shape[start:])):
        lw.emit("Flatten", [x], [y], axis=start)
    else:
        lw.emit("Reshape", [x, lw.const("shape", int64(lw.shape(y)))], [y])


def embedding_module(lw, c) -> None:
    """``nn.Embedding``: a Gather of the weight's rows (padding / max-norm options change nothing at inference
    but ``max_norm``, which rewrites the weight: that one is not lowered)."""
    if c.module.max_norm is not None:
        raise Unsupported("Embedding with max_norm")
    lw.emit("Gather", [lw.param("weight"), lw.input(c.arg("input"))], [lw.out()], axis=0)


def embedding_fn(lw, c) -> None:
    if c.arg("max_norm") is not None:
        raise Unsupported("embedding with max_norm")
    lw.emit("Gather", [lw.input(c.arg("weight")), lw.input(c.arg("input"))], [lw.out()], axis=0)


def expand(lw, c) -> None:
    """``Tensor.expand`` / ``expand_as``: an Expand to the propagated output shape (a constant)."""
    y = lw.out()
    lw.emit("Expand", [lw.input(c.arg("input")), lw.const("shape", int64(lw.shape(y)))], [y])


def transpose(lw, c) -> None:
    x = lw.input(c.arg("input"))
    rank = len(lw.shape(x))
    perm = list(range(rank))
    a, b = axis_of(lw.value(c.arg("dim0")), rank), axis_of(lw.value(c.arg("dim1")), rank)
    perm[a], perm[b] = perm[b], perm[a]
    lw.emit("Transpose", [x], [lw.out()], perm=perm)


def permute(lw, c) -> None:
    x = lw.input(c.arg("input"))
    dims = [lw.value(d) for d in (c.arg("dims"), *c.extra)]
    dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    rank = len(lw.shape(x))
    lw.emit("Transpose", [x], [lw.out()], perm=[axis_of(d, rank) for d in dims])


def matrix_transpose(lw, c) -> None:
    x = lw.input(c.arg("input"))
    if len(lw.shape(x)) != 2:
        raise Unsupported("t() of a non-matrix")
    lw.emit("Transpose", [x], [lw.out()], perm=[1, 0])


def squeeze(lw, c) -> None:
    x = lw.input(c.arg("input"))
    shape = lw.shape(x)
    dim = lw.value(c.arg("dim"))
    dims = range(len(shape)) if dim is None else (dim if isinstance(dim, (tuple, list)) else [dim])
    axes = sorted({axis_of(d, len(shape)) for d in dims if shape[axis_of(d, len(shape))] == 1})
    if not axes:
        lw.emit("Identity", [x], [lw.out()])
        return
    lw.emit("Squeeze", [x, lw.const("axes", int64(axes))], [lw.out()])


def unsqueeze(lw, c) -> None:
    x = lw.input(c.arg("input"))
    axis = axis_of(lw.value(c.arg("dim")), len(lw.shape(x)) + 1)
    lw.emit("Unsqueeze", [x, lw.const("axes", int64([axis]))], [lw.out()])


def concat(lw, c) -> None:
    names = lw.inputs(c.arg("tensors"))
    y = lw.out()
    dim = lw.value(c.arg("dim", c.arg("axis", 0)))
    lw.emit("Concat", names, [y], axis=axis_of(dim, len(lw.shape(y))))


def split_call(lw, c) -> tuple[str, int, list[str], list[int]]:
    """A ``split`` / ``chunk`` call's input, axis, pieces and their sizes (from shape propagation)."""
    x = lw.input(c.arg("input"))
    axis = axis_of(lw.value(c.arg("dim", 0)), len(lw.shape(x)))
    outs = lw.outputs_of(c.node)
    if not outs or any(not isinstance(o, str) for o in outs):
        raise Unsupported("split into non-tensors")
    return x, axis, list(outs), [lw.shape(o)[axis] for o in outs]


def split(lw, c) -> None:
    """``split`` / ``chunk``: one Split whose outputs are the pieces."""
    x, axis, outs, sizes = split_call(lw, c)
    lw.emit("Split", [x, lw.const("split", int64(sizes))], outs, axis=axis)


def unbind(lw, c) -> None:
    """``unbind(x, dim)``: a Split into pieces of one along ``dim``, each Squeezed (timm's ``q, k, v = qkv.unbind(0)``:
    the Split maps every piece's other axes to the input's, so the heads of q, k and v stay one space)."""
    x = lw.input(c.arg("input"))
    shape = lw.shape(x)
    axis = axis_of(lw.value(c.arg("dim", 0)), len(shape))
    outs = lw.outputs_of(c.node)
    if len(outs) != shape[axis] or any(not isinstance(o, str) for o in outs):
        raise Unsupported("unbind into non-tensors")
    one = tuple(1 if k == axis else d for k, d in enumerate(shape))
    pieces = [lw.tmp("piece", one, lw.dtype(x)) for _ in outs]
    lw.emit("Split", [x, lw.const("split", int64([1] * len(outs)))], pieces, axis=axis)
    for piece, out in zip(pieces, outs):
        lw.emit("Squeeze", [piece, lw.const("axes", int64([axis]))], [out])


def getitem(lw, c) -> None:
    """Basic indexing (slices, ints, None, ...) of a tensor: a Slice, then a Reshape when ints or None change
    the rank. Advanced indexing (tensors, lists, bools) is not lowered."""
    x = lw.input(c.arg("input"))
    shape = lw.shape(x)
    index = lw.value(c.arg("index"))
    index = index if isinstance(index, tuple) else (index,)
    if any(not (e is None or e is Ellipsis or isinstance(e, slice) or (isinstance(e, int) and not isinstance(e, bool)))
           for e in index):
        raise Unsupported("advanced indexing")
    used = sum(1 for e in index if e is not None and e is not Ellipsis)
    starts, ends, axes, steps, rank_changes, axis = [], [], [], [], False, 0
    for e in index:
        if e is None:
            rank_changes = True
            continue
        if e is Ellipsis:
            axis += len(shape) - used
            continue
        if isinstance(e, int):
            e, rank_changes = slice(e % shape[axis], e % shape[axis] + 1), True
        taken = range(shape[axis])[e]
        if e != slice(None) and taken != range(shape[axis]):
            starts.append(taken.start)
            ends.append(taken.stop if taken.stop >= 0 or taken.step > 0 else -shape[axis] - 1)
            axes.append(axis)
            steps.append(taken.step)
        axis += 1
    y = lw.out()
    sliced = x
    if axes:
        out_shape = list(shape)
        for a, s, e, st in zip(axes, starts, ends, steps):
            out_shape[a] = len(range(shape[a])[slice(s, e, st)])
        sliced = lw.tmp("slice", tuple(out_shape), lw.dtype(x)) if rank_changes else y
        ins = [x, lw.const("starts", int64(starts)), lw.const("ends", int64(ends)), lw.const("axes", int64(axes)),
               lw.const("steps", int64(steps))]
        lw.emit("Slice", ins, [sliced])
    if rank_changes:
        lw.emit("Reshape", [sliced, lw.const("shape", int64(lw.shape(y)))], [y])
    elif not axes:
        lw.emit("Identity", [x], [y])


def reduce(op: str) -> Canon:
    def lower(lw, c):
        x = lw.input(c.arg("input"))
        rank = len(lw.shape(x))
        dim = lw.value(c.arg("dim"))
        if isinstance(dim, str) or (isinstance(dim, (tuple, list)) and any(isinstance(d, str) for d in dim)):
            raise Unsupported("named dims")
        dims = dim if isinstance(dim, (tuple, list)) else [dim]
        dims = range(rank) if dim is None or not dims else dims
        axes = sorted({axis_of(d, rank) for d in dims})
        keep = int(bool(lw.value(c.arg("keepdim", False))))
        if OPSET >= AXES_AS_INPUT_SINCE.get(op, 18):
            lw.emit(op, [x, lw.const("axes", int64(axes))], [lw.out()], keepdims=keep)
        else:
            lw.emit(op, [x], [lw.out()], axes=axes, keepdims=keep)
    return Canon(op, lower, ("input", "dim", "keepdim"))


def softmax(op: str) -> Canon:
    def lower(lw, c):
        x = lw.input(c.arg("input"))
        dim = c.module.dim if c.module is not None else lw.value(c.arg("dim"))
        if dim is None:
            raise Unsupported("implicit softmax dim")
        lw.emit(op, [x], [lw.out()], axis=axis_of(dim, len(lw.shape(x))))
    return Canon(op, lower, ("input", "dim"))


def matmul(lw, c) -> None:
    lw.emit("MatMul", [lw.input(c.arg("input")), lw.input(c.arg("other"))], [lw.out()])


# ---- recurrent layers ------------------------------------------------------------------------------------------

RNN_OPS = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def rnn_result_names(lw, n: fx.Node, lstm: bool) -> tuple[str, str, str | None]:
    """IR names of ``output``, ``h_n`` (and ``c_n``), named after the getitem nodes that read them; the alias is
    the (nested) tuple torch returns, ``(output, (h_n, c_n))`` for an LSTM, ``(output, h_n)`` otherwise."""
    names = lw.outputs_of(n)
    if lstm:
        if len(names) != 2 or not isinstance(names[1], tuple) or len(names[1]) != 2:
            raise Unsupported("LSTM result")
        return names[0], names[1][0], names[1][1]
    if len(names) != 2 or not all(isinstance(t, str) for t in names):
        raise Unsupported("RNN result")
    return names[0], names[1], None


def rnn_states(lw, hx: Any, lstm: bool) -> list[str | None]:
    """``[h0]`` / ``[h0, c0]`` IR names (None when not given)."""
    if hx is None:
        return [None, None] if lstm else [None]
    if not lstm:
        return [lw.input(hx)]
    names = lw.names_of(hx) if isinstance(hx, fx.Node) else [lw.input(a) for a in hx]
    if len(names) != 2:
        raise Unsupported("LSTM hx must be a pair (h0, c0)")
    return names


def rnn_module(lw, c) -> None:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: one ONNX-style node per layer, so :mod:`graphprune.rules.recurrent`
    applies. Layer k gets ``W = stack_d weight_ih_l{k}[_reverse]`` (D, G·H, I), ``R`` likewise from
    ``weight_hh``, ``B = stack_d concat(bias_ih, bias_hh)`` (D, 2·G·H), built from the real parameters by
    Unsqueeze / Concat nodes (the rule couples rows modulo H, so torch's gate order i,f,g,o / r,z,n needs no
    reordering for channel analysis). ``Y`` (T, D, B, H) is split per direction, squeezed and concatenated on
    the feature axis, (T, B, D·H), which feeds layer k+1: both directions' outputs at h and H + h belong to the
    same hidden unit h (one rule space) without a reshape layout choice, which a consumer that also reads
    ``h_n`` (a head on ``cat([y[-1], h_n[-1]])``) would leave frozen. ``h_n`` /
    ``c_n`` are the per-layer ``Y_h`` / ``Y_c`` concatenated on axis 0, as torch returns them: this also couples
    the hidden units of all layers, since the module has one ``hidden_size``. ``proj_size`` is not lowered."""
    m, node = c.module, c.node
    if getattr(m, "proj_size", 0):
        raise Unsupported("proj_size")
    op = RNN_OPS.get(m.mode)
    if op is None:
        raise Unsupported(f"mode {m.mode}")
    lstm = op == "LSTM"
    x = lw.input(c.arg("input"))
    if len(lw.shape(x)) != 3:
        raise Unsupported("unbatched or packed input")
    dirs, layers, hidden = (2 if m.bidirectional else 1), int(m.num_layers), int(m.hidden_size)
    states = rnn_states(lw, c.arg("hx"), lstm)
    y_out, h_n, c_n = rnn_result_names(lw, node, lstm)
    seq = x
    if m.batch_first:
        seq = lw.tmp("x_tbf", tuple(lw.shape(x)[i] for i in (1, 0, 2)), lw.dtype(x))
        lw.emit("Transpose", [x], [seq], perm=[1, 0, 2])
    steps, batch = lw.shape(seq)[0], lw.shape(seq)[1]
    dtype = lw.dtype(x)

    def unsqueeze0(t: str) -> str:
        out = lw.tmp("dir", (1, *lw.shape(t)), lw.dtype(t))
        lw.emit("Unsqueeze", [t, lw.const("axes", int64([0]))], [out])
        return out

    def concat(parts: list[str], axis: int, label: str) -> str:
        if len(parts) == 1:
            return parts[0]
        shape = list(lw.shape(parts[0]))
        shape[axis] = sum(lw.shape(p)[axis] for p in parts)
        out = lw.tmp(label, tuple(shape), lw.dtype(parts[0]))
        lw.emit("Concat", parts, [out], axis=axis)
        return out

    def per_layer(state: str | None) -> list[str | None]:
        if state is None:
            return [None] * layers
        if lw.shape(state)[0] != layers * dirs:
            raise Unsupported("initial state shape")
        if layers == 1:
            return [state]
        pieces = [lw.tmp("state", (dirs, *lw.shape(state)[1:]), lw.dtype(state)) for _ in range(layers)]
        lw.emit("Split", [state, lw.const("split", int64([dirs] * layers))], pieces, axis=0)
        return pieces

    initial = [per_layer(s) for s in states]
    y_hs, y_cs = [], []
    for k in range(layers):
        suffixes = [f"_l{k}", f"_l{k}_reverse"][:dirs]
        w = concat([unsqueeze0(lw.param(f"weight_ih{s}")) for s in suffixes], 0, "W")
        r = concat([unsqueeze0(lw.param(f"weight_hh{s}")) for s in suffixes], 0, "R")
        b = ""
        if m.bias:
            b = concat([unsqueeze0(concat([lw.param(f"bias_ih{s}"), lw.param(f"bias_hh{s}")], 0, "bias"))
                        for s in suffixes], 0, "B")
        y = lw.tmp(f"Y{k}", (steps, dirs, batch, hidden), dtype)
        y_h = lw.tmp(f"Y_h{k}", (dirs, batch, hidden), dtype)
        outs = [y, y_h]
        ins = [seq, w, r, b, "", initial[0][k] or ""]
        if lstm:
            y_c = lw.tmp(f"Y_c{k}", (dirs, batch, hidden), dtype)
            outs.append(y_c)
            y_cs.append(y_c)
            ins.append(initial[1][k] or "")
        y_hs.append(y_h)
        attrs = {"hidden_size": hidden, "direction": "bidirectional" if dirs == 2 else "forward"}
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        if op == "RNN":
            attrs["activations"] = ["Relu" if m.mode == "RNN_RELU" else "Tanh"] * dirs
        while ins and not ins[-1]:
            ins.pop()
        lw.emit(op, ins, outs, **attrs)
        last = k == layers - 1 and not m.batch_first
        seq = y_out if last else lw.tmp(f"X{k + 1}", (steps, batch, dirs * hidden), dtype)
        pieces = [y]
        if dirs > 1:
            pieces = [lw.tmp(f"Y{k}_d", (steps, 1, batch, hidden), dtype) for _ in range(dirs)]
            lw.emit("Split", [y, lw.const("split", int64([1] * dirs))], pieces, axis=1)
        outs = [seq] if dirs == 1 else [lw.tmp(f"Y{k}_s", (steps, batch, hidden), dtype) for _ in range(dirs)]
        for piece, out in zip(pieces, outs):
            lw.emit("Squeeze", [piece, lw.const("axes", int64([1]))], [out])
        if dirs > 1:
            lw.emit("Concat", outs, [seq], axis=2)
    if m.batch_first:
        lw.emit("Transpose", [seq], [y_out], perm=[1, 0, 2])
    lw.emit("Concat", y_hs, [h_n], axis=0)
    if lstm:
        lw.emit("Concat", y_cs, [c_n], axis=0)

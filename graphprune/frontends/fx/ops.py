"""The one op table of the torch frontends: module types, functions, Tensor methods (torch.fx) and ATen ops
(torch.export) → the ONNX op and the lowering that builds the IR node(s) (:mod:`.lowering`; ATen-only ones in
:mod:`.aten`). ``TABLE`` maps an ``nn.Module`` subclass, a function object (``torch.cat``, ``F.relu``,
``operator.add``), a Tensor method name (``"view"``) or an ATen overload packet (``aten.linear``) to a
:class:`Canon`; in-place methods (``add_``) use their out-of-place entry. Whatever is not here becomes
``Unknown:<target>`` (see :meth:`Lowering.unknown`). The channel rules are not repeated here.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from graphprune.frontends.fx.aten import aten_entries
from graphprune.frontends.fx.lowering import (Canon, batch_norm_fn, batch_norm_module, binary, cast, clamp,
                                            clip_between, concat, conv_fn, conv_module, embedding_fn,
                                            embedding_module, expand, flatten, getitem, group_norm_fn,
                                            group_norm_module, hardtanh_fn, hardtanh_module, identity,
                                            instance_norm_module, layer_norm_fn, layer_norm_module, linear_fn,
                                            linear_module, matmul, matrix_transpose, pad_fn, pad_module, permute,
                                            pool, prelu, reduce, reshape, resize, rnn_module, softmax, split, squeeze,
                                            transpose, unary, unbind, unflatten, unsqueeze, where)

if TYPE_CHECKING:
    from graphprune.frontends.fx.trace import Lowering


def lookup(lw: "Lowering", n: fx.Node) -> Canon | None:
    if n.op == "call_module":
        for cls in type(lw.gm.get_submodule(n.target)).__mro__:
            if cls in TABLE:
                return TABLE[cls]
        return None
    if n.op == "call_method":
        return TABLE.get(n.target) or (TABLE.get(n.target[:-1]) if n.target.endswith("_") else None)
    if isinstance(n.target, torch._ops.OpOverload):  # aten.add.Tensor: the entry of aten.add
        packet = n.target.overloadpacket
        name = packet.__name__
        return TABLE.get(packet) or (TABLE.get(getattr(torch.ops.aten, name[:-1], None))
                                     if name.endswith("_") else None)
    try:
        return TABLE.get(n.target)
    except TypeError:  # unhashable target
        return None



# ---- the table -------------------------------------------------------------------------------------------------

UNARY = {
    "Relu": ([nn.ReLU, F.relu, torch.relu], ["relu"]),
    "Sigmoid": ([nn.Sigmoid, F.sigmoid, torch.sigmoid], ["sigmoid"]),
    "Tanh": ([nn.Tanh, F.tanh, torch.tanh], ["tanh"]),
    "Gelu": ([nn.GELU, F.gelu], []),
    "Swish": ([nn.SiLU, F.silu], []),
    "Mish": ([nn.Mish, F.mish], []),
    "HardSwish": ([nn.Hardswish, F.hardswish], []),
    "HardSigmoid": ([nn.Hardsigmoid, F.hardsigmoid], []),
    "LeakyRelu": ([nn.LeakyReLU, F.leaky_relu], []),
    "Elu": ([nn.ELU, F.elu], []),
    "Selu": ([nn.SELU, F.selu, torch.selu], []),
    "Celu": ([nn.CELU, F.celu], []),
    "Softplus": ([nn.Softplus, F.softplus], []),
    "Softsign": ([nn.Softsign, F.softsign], []),
    "Shrink": ([nn.Hardshrink, nn.Softshrink], []),
    "Exp": ([torch.exp], ["exp"]),
    "Log": ([torch.log], ["log"]),
    "Sqrt": ([torch.sqrt], ["sqrt"]),
    "Abs": ([torch.abs, operator.abs], ["abs"]),
    "Neg": ([torch.neg, operator.neg], ["neg"]),
    "Reciprocal": ([torch.reciprocal], ["reciprocal"]),
    "Erf": ([torch.erf], ["erf"]),
    "Sin": ([torch.sin], ["sin"]),
    "Cos": ([torch.cos], ["cos"]),
    "Floor": ([torch.floor], ["floor"]),
    "Ceil": ([torch.ceil], ["ceil"]),
    "Sign": ([torch.sign], ["sign"]),
}
BINARY = {
    "Add": ([operator.add, operator.iadd, torch.add], ["add"]),
    "Sub": ([operator.sub, operator.isub, torch.sub, torch.subtract], ["sub", "subtract"]),
    "Mul": ([operator.mul, operator.imul, torch.mul, torch.multiply], ["mul", "multiply"]),
    "Div": ([operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide],
            ["div", "true_divide", "divide"]),
    "Pow": ([operator.pow, torch.pow], ["pow"]),
    "Max": ([torch.maximum], ["maximum"]),
    "Min": ([torch.minimum], ["minimum"]),
    "Greater": ([operator.gt, torch.gt], ["gt"]),
    "Less": ([operator.lt, torch.lt], ["lt"]),
    "GreaterOrEqual": ([operator.ge, torch.ge], ["ge"]),
    "LessOrEqual": ([operator.le, torch.le], ["le"]),
}


def build_table() -> dict[Any, Canon]:
    t: dict[Any, Canon] = {}
    for op, (keys, methods) in UNARY.items():
        for k in [*keys, *methods]:
            t[k] = unary(op)
    for op, (keys, methods) in BINARY.items():
        for k in [*keys, *methods]:
            t[k] = binary(op)
    t.update({
        nn.ReLU6: Canon("Clip", clip_between(0.0, 6.0)), F.relu6: Canon("Clip", clip_between(0.0, 6.0)),
        nn.Hardtanh: Canon("Clip", hardtanh_module),
        F.hardtanh: Canon("Clip", hardtanh_fn, ("input", "min_val", "max_val")),
        torch.clamp: Canon("Clip", clamp, ("input", "min", "max")),
        torch.clip: Canon("Clip", clamp, ("input", "min", "max")),
        "clamp": Canon("Clip", clamp, ("input", "min", "max")), "clip": Canon("Clip", clamp, ("input", "min", "max")),
        torch.where: Canon("Where", where, ("condition", "input", "other")),
        nn.PReLU: Canon("PRelu", lambda lw, c: prelu(lw, c, lw.param("weight"))),
        F.prelu: Canon("PRelu", lambda lw, c: prelu(lw, c, lw.input(c.arg("weight"))), ("input", "weight")),
        # identities and casts
        nn.Identity: Canon("Identity", identity), nn.Dropout: Canon("Identity", identity),
        nn.Dropout1d: Canon("Identity", identity), nn.Dropout2d: Canon("Identity", identity),
        nn.Dropout3d: Canon("Identity", identity), nn.AlphaDropout: Canon("Identity", identity),
        F.dropout: Canon("Identity", identity), F.dropout1d: Canon("Identity", identity),
        F.dropout2d: Canon("Identity", identity), F.dropout3d: Canon("Identity", identity),
        "contiguous": Canon("Identity", identity), "clone": Canon("Identity", identity),
        "detach": Canon("Identity", identity), torch.clone: Canon("Identity", identity),
        "to": Canon("Cast", cast), "float": Canon("Cast", cast), "double": Canon("Cast", cast),
        "half": Canon("Cast", cast), "type_as": Canon("Cast", cast),
        # conv, linear, normalisation
        nn.Conv1d: Canon("Conv", conv_module("Conv", 1)), nn.Conv2d: Canon("Conv", conv_module("Conv", 2)),
        nn.Conv3d: Canon("Conv", conv_module("Conv", 3)),
        nn.ConvTranspose1d: Canon("ConvTranspose", conv_module("ConvTranspose", 1)),
        nn.ConvTranspose2d: Canon("ConvTranspose", conv_module("ConvTranspose", 2)),
        nn.ConvTranspose3d: Canon("ConvTranspose", conv_module("ConvTranspose", 3)),
        F.conv1d: conv_fn("Conv", 1), F.conv2d: conv_fn("Conv", 2), F.conv3d: conv_fn("Conv", 3),
        F.conv_transpose1d: conv_fn("ConvTranspose", 1), F.conv_transpose2d: conv_fn("ConvTranspose", 2),
        F.conv_transpose3d: conv_fn("ConvTranspose", 3),
        nn.Linear: Canon("Gemm", linear_module), F.linear: Canon("Gemm", linear_fn, ("input", "weight", "bias")),
        nn.BatchNorm1d: Canon("BatchNormalization", batch_norm_module),
        nn.BatchNorm2d: Canon("BatchNormalization", batch_norm_module),
        nn.BatchNorm3d: Canon("BatchNormalization", batch_norm_module),
        F.batch_norm: Canon("BatchNormalization", batch_norm_fn,
                            ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")),
        nn.LayerNorm: Canon("LayerNormalization", layer_norm_module),
        F.layer_norm: Canon("LayerNormalization", layer_norm_fn, ("input", "normalized_shape", "weight", "bias", "eps")),
        nn.GroupNorm: Canon("GroupNormalization", group_norm_module),
        F.group_norm: Canon("GroupNormalization", group_norm_fn, ("input", "num_groups", "weight", "bias", "eps")),
        nn.InstanceNorm1d: Canon("InstanceNormalization", instance_norm_module(1)),
        nn.InstanceNorm2d: Canon("InstanceNormalization", instance_norm_module(2)),
        nn.InstanceNorm3d: Canon("InstanceNormalization", instance_norm_module(3)),
        nn.Softmax: softmax("Softmax"), nn.LogSoftmax: softmax("LogSoftmax"),
        F.softmax: softmax("Softmax"), torch.softmax: softmax("Softmax"), "softmax": softmax("Softmax"),
        F.log_softmax: softmax("LogSoftmax"), torch.log_softmax: softmax("LogSoftmax"),
        "log_softmax": softmax("LogSoftmax"),
        # pooling, resize, pad
        nn.Upsample: Canon("Resize", resize), nn.UpsamplingNearest2d: Canon("Resize", resize),
        nn.UpsamplingBilinear2d: Canon("Resize", resize), F.interpolate: Canon("Resize", resize),
        F.pad: Canon("Pad", pad_fn, ("input", "pad", "mode", "value")),
        # shape ops
        "view": Canon("Reshape", reshape, ("input", "shape"), fix="view"),
        "reshape": Canon("Reshape", reshape, ("input", "shape"), fix="view"),
        torch.reshape: Canon("Reshape", reshape, ("input", "shape"), fix="view"),
        "unflatten": Canon("Reshape", unflatten, ("input", "dim", "sizes"), fix="unflatten"),
        nn.Unflatten: Canon("Reshape", unflatten),
        nn.Embedding: Canon("Gather", embedding_module),
        F.embedding: Canon("Gather", embedding_fn, ("input", "weight", "padding_idx", "max_norm")),
        "expand": Canon("Expand", expand, ("input", "size")), "expand_as": Canon("Expand", expand, ("input", "other")),
        nn.Flatten: Canon("Flatten", flatten), torch.flatten: Canon("Flatten", flatten, ("input", "start_dim", "end_dim")),
        "flatten": Canon("Flatten", flatten, ("input", "start_dim", "end_dim")),
        "permute": Canon("Transpose", permute, ("input", "dims")),
        torch.permute: Canon("Transpose", permute, ("input", "dims")),
        "transpose": Canon("Transpose", transpose, ("input", "dim0", "dim1")),
        torch.transpose: Canon("Transpose", transpose, ("input", "dim0", "dim1")),
        "t": Canon("Transpose", matrix_transpose), torch.t: Canon("Transpose", matrix_transpose),
        "squeeze": Canon("Squeeze", squeeze, ("input", "dim")), torch.squeeze: Canon("Squeeze", squeeze, ("input", "dim")),
        "unsqueeze": Canon("Unsqueeze", unsqueeze, ("input", "dim")),
        torch.unsqueeze: Canon("Unsqueeze", unsqueeze, ("input", "dim")),
        torch.cat: Canon("Concat", concat, ("tensors", "dim")), torch.concat: Canon("Concat", concat, ("tensors", "dim")),
        torch.concatenate: Canon("Concat", concat, ("tensors", "dim")),
        torch.split: Canon("Split", split, ("input", "split_size_or_sections", "dim"), fix="split"),
        "split": Canon("Split", split, ("input", "split_size", "dim"), fix="split"),
        torch.chunk: Canon("Split", split, ("input", "chunks", "dim"), fix="split"),
        torch.unbind: Canon("Split", unbind, ("input", "dim")), "unbind": Canon("Split", unbind, ("input", "dim")),
        "chunk": Canon("Split", split, ("input", "chunks", "dim"), fix="split"),
        operator.getitem: Canon("Slice", getitem, ("input", "index"), fix="slice"),
        # reductions, matmul
        "mean": reduce("ReduceMean"), torch.mean: reduce("ReduceMean"),
        "sum": reduce("ReduceSum"), torch.sum: reduce("ReduceSum"),
        "amax": reduce("ReduceMax"), torch.amax: reduce("ReduceMax"),
        "amin": reduce("ReduceMin"), torch.amin: reduce("ReduceMin"),
        operator.matmul: Canon("MatMul", matmul, ("input", "other")),
        torch.matmul: Canon("MatMul", matmul, ("input", "other")),
        torch.mm: Canon("MatMul", matmul, ("input", "other")), torch.bmm: Canon("MatMul", matmul, ("input", "other")),
        "matmul": Canon("MatMul", matmul, ("input", "other")), "mm": Canon("MatMul", matmul, ("input", "other")),
        "bmm": Canon("MatMul", matmul, ("input", "other")),
        # recurrent layers (LSTM, GRU, RNN): one node per layer, see rnn_module
        nn.RNNBase: Canon("LSTM", rnn_module, ("input", "hx")),
    })
    for spatial in (1, 2, 3):
        for kind, op in (("Max", "MaxPool"), ("Avg", "AveragePool"), ("LP", "LpPool")):
            if hasattr(nn, f"{kind}Pool{spatial}d"):
                t[getattr(nn, f"{kind}Pool{spatial}d")] = Canon(op, pool(op, spatial))
        for kind, op in (("Max", "MaxPool"), ("Avg", "AveragePool")):
            t[getattr(nn, f"Adaptive{kind}Pool{spatial}d")] = Canon(op, pool(op, spatial, adaptive=True))
            t[getattr(F, f"adaptive_{kind.lower()}_pool{spatial}d")] = Canon(op, pool(op, spatial, adaptive=True))
            t[getattr(F, f"{kind.lower()}_pool{spatial}d")] = Canon(op, pool(op, spatial))
        for kind in ("Constant", "Zero", "Reflection", "Replication", "Circular"):
            if hasattr(nn, f"{kind}Pad{spatial}d"):
                t[getattr(nn, f"{kind}Pad{spatial}d")] = Canon("Pad", pad_module)
    t.update(aten_entries())
    return t


TABLE: dict[Any, Canon] = build_table()

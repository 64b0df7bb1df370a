"""The integer linear ops of quantized models: ConvInteger, MatMulInteger (``quantize_dynamic``), QLinearConv,
QLinearMatMul (``quantize_static``, QOperator format). Which input is which, and the value a removed weight entry
takes in the masked original.

They compute ``Σ (a − a_zp)(b − b_zp)``: a removed input channel contributes nothing only where the weight holds its
*zero point*, not 0. So the masked original (:mod:`graphprune.verify.masked`) fills a constant weight's removed
entries with its zero point (:func:`weight_fill`), and the rules (:mod:`graphprune.channels.rules.quant`) let the
contracted axis shrink only when one operand is such a constant, with a constant zero point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.ir import Graph


@dataclass(frozen=True)
class IntegerLinear:
    """Input indices of an integer linear op computing the float op ``kind`` (``Conv`` or ``MatMul``) of ``a`` by
    ``b``: their zero points (per tensor, or ``b``'s per output channel / column, ``a``'s per row), their scales
    (QLinear ops) and the bias (QLinearConv). ``None``: the op has no such input."""

    kind: str
    a: int
    a_zp: int
    b: int
    b_zp: int
    a_scale: int | None = None
    b_scale: int | None = None
    bias: int | None = None


INTEGER_LINEAR = {
    "ConvInteger": IntegerLinear("Conv", a=0, a_zp=2, b=1, b_zp=3),
    "MatMulInteger": IntegerLinear("MatMul", a=0, a_zp=2, b=1, b_zp=3),
    "QLinearConv": IntegerLinear("Conv", a=0, a_zp=2, b=3, b_zp=5, a_scale=1, b_scale=4, bias=8),
    "QLinearMatMul": IntegerLinear("MatMul", a=0, a_zp=2, b=3, b_zp=5, a_scale=1, b_scale=4),
}


def input_name(inputs: tuple[str, ...] | list[str], index: int | None) -> str | None:
    """The name at ``index`` of ``inputs``, None when absent or omitted."""
    return inputs[index] if index is not None and index < len(inputs) and inputs[index] else None


def weight_fill(kind: str, side: str, weight_shape: tuple[int, ...], zero_point: np.ndarray | None) -> np.ndarray | None:
    """The value a removed entry of constant operand ``side`` ("a" or "b") takes in the masked original: its zero
    point, shaped to broadcast over the weight (per output channel: Conv's W[0]; per row of A: A[-2]; per column of
    B: B[-1]). None where that is 0 anyway (no zero point, or an all-zero one), or the zero point fits no axis.
    A per-channel scale is shaped the same way (:func:`integer_centred`)."""
    if zero_point is None or not np.any(zero_point) or len(weight_shape) < 2:
        return None
    zp = np.asarray(zero_point)
    if zp.size == 1:
        return zp.reshape(())
    rank = len(weight_shape)
    axis = 0 if kind == "Conv" else (rank - 2 if side == "a" else rank - 1)
    if zp.ndim != 1 or weight_shape[axis] != zp.size:
        return None
    shape = [1] * rank
    shape[axis] = zp.size
    return zp.reshape(shape)


def centred_values(graph: Graph, name: str) -> np.ndarray:
    """Weight ``name`` as the model computes with it, for scoring: a quantized weight less its zero point, times its
    scale where a DequantizeLinear or QLinear op holds one; any other weight as stored. Raw quantized codes say
    little (uint8 codes centre on a zero point near 128; per-channel codes each fill the whole range)."""
    values = graph.value(name)
    for node in graph.consumers.get(name, ()):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op == "DequantizeLinear" and node.inputs[0] == name:
            return dequantized(values, graph.value(node.input(1)), graph.value(node.input(2)), int(node.attr("axis", 1)))
        q = INTEGER_LINEAR.get(node.op)
        for side in ("a", "b") if q is not None else ():
            if input_name(node.inputs, getattr(q, side)) == name:
                return integer_centred(q, side, values, graph.value(input_name(node.inputs, getattr(q, f"{side}_zp"))),
                                       graph.value(input_name(node.inputs, getattr(q, f"{side}_scale"))))
    return values


def dequantized(values: np.ndarray, scale: np.ndarray | None, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """``(values − zp) · scale`` with per-tensor or per-axis parameters; the codes as they are if the scale is not
    a constant (a blocked or computed one)."""
    out = np.asarray(values, np.float64)
    if scale is None or scale.ndim > 1 or (scale.size > 1 and (out.ndim == 0 or out.shape[axis % out.ndim] != scale.size)):
        return values  # not per tensor nor per axis of this weight (a malformed model fails in onnxruntime later)
    shape = [1] * out.ndim
    if scale.size > 1:
        shape[axis % out.ndim] = scale.size
    if zp is not None and zp.size in (1, scale.size):
        out = out - np.asarray(zp, np.float64).reshape(shape if zp.size > 1 else ())
    return out * np.asarray(scale, np.float64).reshape(shape if scale.size > 1 else ())


def integer_centred(q: IntegerLinear, side: str, values: np.ndarray, zp: np.ndarray | None,
                    scale: np.ndarray | None) -> np.ndarray:
    """Operand ``side`` of an integer linear op less its zero point, times its scale when the op holds one."""
    out = np.asarray(values, np.float64)
    fill = weight_fill(q.kind, side, out.shape, zp)
    if fill is not None:
        out = out - fill
    shaped = weight_fill(q.kind, side, out.shape, scale)
    return out if shaped is None else out * shaped

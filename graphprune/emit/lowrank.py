"""Low-rank surgery on ONNX: each chosen Conv / Gemm / MatMul becomes two thinner ops of the same type.

* Gemm, MatMul: W ≈ U_r · (S_r V_rᵀ), two ops of the same type (Gemm keeps transA / transB / alpha / beta / C).
* Conv, channel-wise: r filters of c×k×k with the original strides, pads and dilations, then a 1×1 conv back to
  n carrying the bias. Spatial-wise (2-D): a kh×1 conv with r filters (the H stride / pads / dilation), then a
  1×kw conv to n (the W ones) with the bias. Grouped convs are decomposed per group with one shared rank, so
  both new convs keep ``group``.

New nodes are named ``<node>/lowrank_a`` and ``<node>/lowrank_b``. The low-rank pass and its verifier (the full-rank
check) both call :func:`decompose_model`.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.emit.onnx import checked_shapes
from graphprune.gsgraph import export_like
from graphprune.methods import lowrank as lr
from graphprune.methods.lowrank import Layer


def decompose_model(model: onnx.ModelProto, layers: list[Layer], *, full_rank: bool = False) -> onnx.ModelProto:
    """``model`` with every layer replaced by its two factors (at full rank when ``full_rank``)."""
    g = gs.import_onnx(model)
    nodes = {n.name: n for n in g.nodes}
    opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 0)
    for layer in layers:
        node = nodes[layer.node]
        r = layer.full_rank if full_rank else layer.rank
        build = {"Conv": conv_pair, "Gemm": gemm_pair, "MatMul": matmul_pair}[node.op]
        g.nodes.extend(build(node, layer, r, opset))
        node.inputs.clear()
        node.outputs.clear()
    g.cleanup().toposort()
    out = export_like(g, model)
    out.metadata_props.extend(model.metadata_props)
    return checked_shapes(out)


def const(name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(value))


def middle(node: gs.Node) -> gs.Variable:
    return gs.Variable(f"{node.name}/lowrank_a/output", dtype=node.outputs[0].dtype)


def optional(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def conv_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    x, w, bias = node.inputs[0], np.asarray(node.inputs[1].values), optional(node, 2)
    nd = w.ndim - 2
    k = list(w.shape[2:])
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    pads = explicit_pads(node, x, k, strides, dilations)
    groups = layer.groups
    first_w, second_w = lr.conv_factors(w, r, groups, layer.kind)
    name = node.name
    if layer.kind == "channel":
        first = dict(kernel_shape=k, strides=strides, pads=pads, dilations=dilations, group=groups)
        second = dict(kernel_shape=[1] * nd, group=groups)
    else:
        (kh, kw), (sh, sw), (dh, dw) = k, strides, dilations
        first = dict(kernel_shape=[kh, 1], strides=[sh, 1], pads=[pads[0], 0, pads[2], 0], dilations=[dh, 1],
                     group=groups)
        second = dict(kernel_shape=[1, kw], strides=[1, sw], pads=[0, pads[1], 0, pads[3]], dilations=[1, dw],
                      group=groups)
    mid = middle(node)
    a = gs.Node("Conv", f"{name}/lowrank_a", first, [x, const(f"{name}/lowrank_a.weight", first_w)], [mid])
    b_inputs = [mid, const(f"{name}/lowrank_b.weight", second_w)] + ([bias] if bias is not None else [])
    b = gs.Node("Conv", f"{name}/lowrank_b", second, b_inputs, [node.outputs[0]])
    return [a, b]


def explicit_pads(node: gs.Node, x: gs.Tensor, k: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """The conv's padding as explicit [begin…, end…], resolving ``auto_pad`` from the input's static shape."""
    nd = len(k)
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(node.attrs.get("pads", [0] * (2 * nd)))
    if auto == "VALID":
        return [0] * (2 * nd)
    begin, end = [], []
    for size, kk, s, d in zip(x.shape[2:], k, strides, dilations):
        out = -(-int(size) // s)
        total = max(0, (out - 1) * s + (kk - 1) * d + 1 - int(size))
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def gemm_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    a_in, w, c = node.inputs[0], np.asarray(node.inputs[1].values), optional(node, 2)
    trans_b = int(node.attrs.get("transB", 0))
    u, svt = lr.factor(w.T if trans_b else w, r)  # (K, r), (r, N)
    u, svt = u.astype(w.dtype), svt.astype(w.dtype)
    name = node.name
    mid = middle(node)
    first_inputs = [a_in, const(f"{name}/lowrank_a.weight", u.T if trans_b else u)]
    if opset < 11:  # C became optional in opset 11
        first_inputs.append(const(f"{name}/lowrank_a.bias", np.zeros(r, w.dtype)))
    a = gs.Node("Gemm", f"{name}/lowrank_a", {"transA": int(node.attrs.get("transA", 0)), "transB": trans_b},
                first_inputs, [mid])
    attrs = {"alpha": float(node.attrs.get("alpha", 1.0)), "beta": float(node.attrs.get("beta", 1.0)),
             "transB": trans_b}
    b_inputs = [mid, const(f"{name}/lowrank_b.weight", svt.T if trans_b else svt)] + ([c] if c is not None else [])
    b = gs.Node("Gemm", f"{name}/lowrank_b", attrs, b_inputs, [node.outputs[0]])
    return [a, b]


def matmul_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    idx = 1 if isinstance(node.inputs[1], gs.Constant) else 0
    x, w = node.inputs[1 - idx], np.asarray(node.inputs[idx].values)
    u, svt = (m.astype(w.dtype) for m in lr.factor(w, r))  # w ≈ u @ svt
    name = node.name
    mid = middle(node)
    wa, wb = const(f"{name}/lowrank_a.weight", u if idx == 1 else svt), const(f"{name}/lowrank_b.weight", svt if idx == 1 else u)
    if idx == 1:  # X @ W = (X @ U_r) @ (S_r V_rᵀ)
        return [gs.Node("MatMul", f"{name}/lowrank_a", {}, [x, wa], [mid]),
                gs.Node("MatMul", f"{name}/lowrank_b", {}, [mid, wb], [node.outputs[0]])]
    # W @ X = U_r @ ((S_r V_rᵀ) @ X)
    return [gs.Node("MatMul", f"{name}/lowrank_a", {}, [wa, x], [mid]),
            gs.Node("MatMul", f"{name}/lowrank_b", {}, [wb, mid], [node.outputs[0]])]

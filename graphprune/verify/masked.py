"""The channel-removal oracle: the emitted model is right when it equals the masked original.

Pruning changes outputs by design, so "verified" means: the emitted model passes the full ONNX checker,
runs in onnxruntime, keeps the interface, and computes exactly what the original computes when every removed
unit is set to zero where it lives (every computed tensor of a pruned space is passed through
``Where(mask, t, 0)``, every weight is zeroed in its data). That checks every coupling, slice and shape fix independently of which scoring method
chose the channels. Drift against the unpruned original is measured, not asserted.
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from collections import defaultdict
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.channels.plan import Plan
from graphprune.channels.quantized import INTEGER_LINEAR, weight_fill
from graphprune.errors import InternalError
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.frontends.onnx.proto import skeleton
from graphprune.gsgraph import export_like, reroute
from graphprune.io import Stripped, holds_data
from graphprune.runtime import seeded_inputs
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.result import Tolerance, Verification


def masked_model(model: onnx.ModelProto, plan: Plan) -> Stripped:
    """The original with every pruned atom forced to zero right where its tensor is produced: a computed tensor
    through ``Where(keep, t, 0)``, a constant in its data; and every normalisation over a pruned axis taking its
    statistics over the kept channels (:func:`renormalise`). Built on the :func:`skeleton` of ``model``, whose
    large initializers are read from ``model`` (and masked) one at a time as the oracle is written out, so the
    oracle never holds a second copy of the weights."""
    light = skeleton(model)
    stripped = {t.name for t in light.graph.initializer if not holds_data(t)}
    g = gs.import_onnx(light)
    tensors = g.tensors()
    fills = zero_point_fills(g)
    edits = {}
    for name, keep in keep_masks(plan, lambda name: len(tensors[name].shape)).items():
        t = tensors[name]
        if name in stripped:
            edits[name] = functools.partial(zeroed, keep=keep, fill=fills.get(name))
        elif isinstance(t, gs.Constant):
            t.values = zeroed(np.asarray(t.values), keep, fills.get(name))
        else:
            masked = gs.Variable(f"{name}::masked", dtype=t.dtype, shape=t.shape)
            consumers = list(t.outputs)
            g.nodes.extend(mask_node(name, t, keep, t.dtype, masked))
            reroute(consumers, t, masked)
    renormalise(g, plan, next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 17))
    g.toposort()
    return Stripped.over(export_like(g, model), model, edits)


def renormalise(g: gs.Graph, plan: Plan, opset: int) -> None:
    """Each statistic the plan renormalises (``plan.renormalised``) taken over the kept channels of its axis: a
    mean of the masked tensor (removed atoms are zero) times n / k; Layer / RMS normalisation written out so."""
    nodes = {n.name: n for n in g.nodes}
    for r in plan.renormalised:
        node = nodes.get(r.node)
        if node is None:
            raise InternalError(f"the plan renormalises '{r.node}', which the model does not have")
        keep = ~plan.removed_mask(r.space)
        factor = len(keep) / int(keep.sum())
        if node.op == "ReduceMean":
            out = node.outputs[0]
            scaled = gs.Variable(f"{out.name}::kept_mean", dtype=out.dtype, shape=out.shape)
            consumers = list(out.outputs)
            g.nodes.append(gs.Node("Mul", f"{node.name}::kept_count",
                                   inputs=[out, scalar(f"{node.name}::n_over_k", out.dtype, factor)], outputs=[scaled]))
            reroute(consumers, out, scaled)
        else:
            g.nodes.extend(written_norm(node, keep, factor, r.space.axis, opset))
            node.inputs.clear()
            node.outputs.clear()


def scalar(name: str, dtype, value: float) -> gs.Constant:
    return gs.Constant(name, np.asarray(value, dtype=np.dtype(dtype or np.float32)))


def written_norm(node: gs.Node, keep: np.ndarray, factor: float, axis: int, opset: int) -> list[gs.Node]:
    """Layer / RMS normalisation over ``axis`` with its statistics over the kept entries of ``keep``."""
    x, y = node.inputs[0], node.outputs[0]
    rank, dtype, name = len(x.shape), x.dtype, node.name
    counter = iter(range(100))

    def var(label: str) -> gs.Variable:
        return gs.Variable(f"{name}::{label}{next(counter)}", dtype=dtype)

    def const(value: float) -> gs.Constant:
        return scalar(f"{name}::c{next(counter)}", dtype, value)

    def op(kind: str, *inputs, **attrs) -> gs.Variable:
        out = var(kind.lower())
        nodes.append(gs.Node(kind, out.name, attrs, list(inputs), [out]))
        return out

    def mean(t: gs.Tensor) -> gs.Variable:
        if opset >= 18:
            m = op("ReduceMean", t, gs.Constant(f"{name}::axes{next(counter)}", np.array([axis], np.int64)), keepdims=1)
        else:
            m = op("ReduceMean", t, axes=[axis], keepdims=1)
        return op("Mul", m, const(factor))

    nodes: list[gs.Node] = []
    shape = [1] * rank
    shape[axis] = len(keep)
    kept = gs.Constant(f"{name}::kept", keep.reshape(shape))
    present = [t if t is not None and t.name else None for t in node.inputs] + [None] * 5
    gamma, beta = present[1], present[2]
    if node.op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):  # the norm of x + skip (+ bias)
        gamma, beta, bias = present[2], (present[3] if node.op == "SkipLayerNormalization" else None), \
            present[4 if node.op == "SkipLayerNormalization" else 3]
        x = op("Add", x, present[1])
        x = op("Add", x, bias) if bias is not None else x
        if len(node.outputs) > 3 and node.outputs[3].name:
            nodes.append(gs.Node("Identity", f"{name}::sum", inputs=[x], outputs=[node.outputs[3]]))
    if node.op == "InstanceNormalization":  # per channel (axis 1) over ``axis``: the affine broadcast on axis 1
        column = gs.Constant(f"{name}::column", np.array([-1] + [1] * (rank - 2), np.int64))
        gamma, beta = op("Reshape", gamma, column), op("Reshape", beta, column)
    centred = x
    if node.op in ("LayerNormalization", "SkipLayerNormalization", "InstanceNormalization"):
        centred = op("Where", kept, op("Sub", x, mean(x)), const(0.0))
    spread = op("Sqrt", op("Add", mean(op("Mul", centred, centred)), const(float(node.attrs.get("epsilon", 1e-5)))))
    out = op("Mul", op("Div", centred, spread), gamma)
    if beta is not None:
        out = op("Add", out, beta)
    nodes.append(gs.Node("Identity", f"{name}::out", inputs=[out], outputs=[y]))
    return nodes


def keep_masks(plan: Plan, rank_of: Callable[[str], int]) -> dict[str, np.ndarray]:
    """Tensor → boolean array of its rank, broadcastable to it, False at the atoms ``plan`` removes (on any of
    its axes)."""
    axes_of: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for space in plan.keep:
        if not space.virtual:
            axes_of[space.tensor].append((space.axis, plan.removed_mask(space)))
    masks = {}
    for name, axes in axes_of.items():
        rank = rank_of(name)
        keep = np.ones([1] * rank, bool)
        for axis, removed in axes:
            shape = [1] * rank
            shape[axis] = len(removed)
            keep = keep & ~removed.reshape(shape)
        masks[name] = keep
    return masks


def zeroed(values: np.ndarray, keep: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """``values`` with zeros where ``keep`` is False: exactly what ``Where(keep, values, 0)`` computes; with ``fill``
    (a quantized weight's zero point, broadcast over it) that instead, which is what contributes nothing."""
    return np.where(keep, values, np.zeros((), values.dtype) if fill is None else fill.astype(values.dtype))


def zero_point_fills(g: gs.Graph) -> dict[str, np.ndarray]:
    """Each constant operand of an integer linear op (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul) with a
    non-zero constant zero point → that zero point, shaped to broadcast over it: what its removed entries hold in
    the masked original (see :mod:`graphprune.channels.quantized`)."""
    fills: dict[str, np.ndarray] = {}
    for node in g.nodes:
        q = INTEGER_LINEAR.get(node.op)
        if q is None or node.domain not in ("", "ai.onnx", None):
            continue
        for side in ("a", "b"):
            operand, zp = gs_input(node, getattr(q, side)), gs_input(node, getattr(q, f"{side}_zp"))
            if isinstance(operand, gs.Constant) and isinstance(zp, gs.Constant):
                fill = weight_fill(q.kind, side, tuple(operand.shape), np.asarray(zp.values))
                if fill is not None:
                    fills.setdefault(operand.name, fill)
    return fills


def gs_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, None when absent or omitted."""
    return node.inputs[index] if index < len(node.inputs) and not node.inputs[index].is_empty() else None


WHERE_VIA = {"int16": np.int32, "uint16": np.int32}  # types onnxruntime's Where lacks (16-bit QDQ activations)


def mask_node(name: str, t: gs.Tensor, keep: np.ndarray, dtype, out: gs.Variable) -> list[gs.Node]:
    """``Where(keep, t, 0)``; for booleans ``And(t, keep)`` (onnxruntime has no boolean Where); for a type its
    Where lacks, through a wider one it has (:data:`WHERE_VIA`: exact both ways)."""
    keep_c = gs.Constant(f"{name}::keep", keep)
    if np.dtype(dtype) == np.bool_:
        return [gs.Node("And", f"{name}::mask", inputs=[t, keep_c], outputs=[out])]
    via = WHERE_VIA.get(np.dtype(dtype).name)
    if via is None:
        zero = gs.Constant(f"{name}::zero", np.zeros((), dtype=dtype))
        return [gs.Node("Where", f"{name}::mask", inputs=[keep_c, t, zero], outputs=[out])]
    wide, masked = (gs.Variable(f"{name}::{label}", dtype=via, shape=t.shape) for label in ("wide", "wide_masked"))
    zero = gs.Constant(f"{name}::zero", np.zeros((), dtype=via))
    return [gs.Node("Cast", f"{name}::widen", attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(np.dtype(via))},
                    inputs=[t], outputs=[wide]),
            gs.Node("Where", f"{name}::mask", inputs=[keep_c, wide, zero], outputs=[masked]),
            gs.Node("Cast", f"{name}::narrow", attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))},
                    inputs=[masked], outputs=[out])]


def verify_masked(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan,
                  tolerance: Tolerance = Tolerance()) -> Verification:
    """``pruned`` against the masked original of ``source`` (the source itself for an empty plan). Never raises
    for a failed check (the caller decides), only reports it."""
    feeds = seeded_inputs(source.model, source.input_shapes, tolerance.seed)
    oracle = None if plan.empty else (lambda: masked_model(source.model, plan))
    what = "pruned - masked original" + (" (statistics over the kept channels)" if plan.renormalised else "")
    written_out = (lambda: masked_model(source.model, nothing_removed(plan))) if plan.renormalised else None
    return compare_with_oracle(source.model, pruned, oracle, feeds, label="masked_original", what=what,
                               rtol=tolerance.rtol, atol=tolerance.atol,
                               declared=source.declared, written_out=written_out)


def nothing_removed(plan: Plan) -> Plan:
    """``plan``'s normalisations over pruned axes, with every channel kept: the masked original built from it is
    the original with those normalisations written out as the oracle writes them, equal to it in exact
    arithmetic. How far it is from the original is the float rounding the written-out form brings (ONNX Runtime's
    LayerNormalization kernel and the explicit two-pass form differ by 3e-4 after an activation offset of 300)."""
    spaces = {r.space for r in plan.renormalised}
    return Plan(MappingProxyType({}), MappingProxyType({s: np.arange(plan.sizes[s]) for s in spaces}),
                MappingProxyType({s: plan.sizes[s] for s in spaces}), plan.meta, plan.renormalised)

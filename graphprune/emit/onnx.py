"""ONNX emitter: slice every initializer along its pruned axes, shrink value shapes, and let per-op fixes
rewrite what depends on channel counts (see :mod:`graphprune.emit.onnx_fixes`).

It edits a graphsurgeon copy of the folded source, so the input model is never touched.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.errors import InternalError
from graphprune.frontends.onnx.proto import inferred_shapes
from graphprune.gsgraph import export_like, reroute
from graphprune.ir import Graph
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.emit.onnx_fixes import FIXES


@dataclass(frozen=True, eq=False)
class FixContext:
    """What a per-op fix may ask: kept indices and new sizes of the original graph's spaces."""

    plan: Plan
    graph: Graph
    opset: int

    def kept(self, tensor: str, axis: int) -> np.ndarray | None:
        return self.plan.kept(Space(tensor, axis))

    def kept_virtual(self, label: str) -> np.ndarray | None:
        return self.plan.kept(Space(label, 0, virtual=True))

    def new_shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.graph.shape(tensor)
        return tuple(len(k) if (k := self.kept(tensor, a)) is not None else d for a, d in enumerate(shape))

    def changed(self, tensor: str) -> bool:
        if self.graph.shape(tensor) is None:  # unknown shape: its node's rule froze it, so it cannot have changed
            return False
        return self.new_shape(tensor) != self.graph.shape(tensor)


def emit(model: onnx.ModelProto, graph: Graph, plan: Plan) -> onnx.ModelProto:
    """The model with ``plan`` applied; a copy of ``model`` when the plan removes nothing."""
    if plan.empty:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    g = gs.import_onnx(model)
    slice_tensors(g, plan, graph)
    ctx = FixContext(plan, graph, graph.opset)
    for node in g.nodes:
        fix = FIXES.get(node.op)
        if fix is not None:
            fix(node, ctx)
    return checked_shapes(export_like(g, model))


def slice_tensors(g: gs.Graph, plan: Plan, graph: Graph) -> None:
    """Constants lose their removed atoms; computed tensors get their new shape (their producers shrink them).
    A tensor the analysed graph holds as a constant but ``g`` computes (a model folded without pinning its
    dynamic dimensions, see :mod:`graphprune.dynamic`: an RNN's zero initial state built from the batch size)
    is narrowed by a ``Gather`` of its kept indices, which is right whatever computes it."""
    by_tensor: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for space, kept in plan.keep.items():
        if not space.virtual:
            by_tensor[space.tensor].append((space.axis, kept))
    tensors = g.tensors()
    for name, axes in by_tensor.items():
        t = tensors.get(name)
        if t is None:
            raise InternalError(f"plan names tensor '{name}', which is not in the model")
        if isinstance(t, gs.Constant):
            values = np.asarray(t.values)
            for axis, kept in axes:
                values = np.take(values, kept, axis=axis)
            t.values = np.ascontiguousarray(values)
        elif graph.is_const(name):
            select_kept(g, t, axes)
        elif t.shape is not None:
            shape = list(t.shape)
            for axis, kept in axes:
                shape[axis] = len(kept)
            t.shape = shape


def checked_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Re-infer every shape strictly: a fix that got a size wrong fails here, naming the node."""
    del model.graph.value_info[:]
    try:
        return inferred_shapes(model, strict=True)
    except Exception as exc:
        raise InternalError(f"emitted model is inconsistent: {str(exc).splitlines()[0]}") from exc


def select_kept(g: gs.Graph, t: gs.Variable, axes: list[tuple[int, np.ndarray]]) -> None:
    """Every reader of ``t`` reads ``Gather(t, kept, axis)`` for each narrowed axis instead."""
    readers, current = list(t.outputs), t
    for axis, kept in axes:
        out = gs.Variable(f"{t.name}::kept{axis}", dtype=t.dtype)
        g.nodes.append(gs.Node("Gather", f"{t.name}::select{axis}", attrs={"axis": int(axis)},
                               inputs=[current, gs.Constant(f"{t.name}::kept{axis}_indices", np.asarray(kept, np.int64))],
                               outputs=[out]))
        current = out
    reroute(readers, t, current)
    g.toposort()

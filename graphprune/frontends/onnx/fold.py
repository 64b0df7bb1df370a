"""Constant folding: exported models compute weights and shapes inside the graph; channel rules need them as
plain constants (graphsurgeon folds, shape inference makes the result static)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from graphprune.errors import ModelLoadError
from graphprune.frontends.onnx.narrow import keeps_storage  # int8 / fp16 weights behind a Cast stay so
from graphprune.frontends.onnx.proto import infer_shapes
from graphprune.gsgraph import export_lean


def fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shape sub-graphs, name every node uniquely, and infer static shapes."""
    model = infer_shapes(shape_ranges_as_slices(model))
    try:
        graph = gs.import_onnx(model)
        graph.fold_constants(fold_shapes=True, error_ok=True, should_exclude_node=keeps_storage).cleanup().toposort()
        name_nodes(graph)
        folded = export_lean(graph)
    except Exception as exc:
        raise ModelLoadError(f"cannot fold constants: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    # graphsurgeon writes initializers only as initializers, which IR < 4 does not allow (they had to be inputs)
    folded.ir_version = max(model.ir_version, 4)
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return infer_shapes(folded)


def shape_ranges_as_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (edited in place) with every ``Shape(x, start, end)`` (opset 15) written as ``Shape(x)`` then a
    ``Slice`` of that range. graphsurgeon's shape folding ignores ``start`` / ``end`` and would fold the whole
    shape (the dynamo exporter's LSTM ``initial_h`` for a dynamic batch came out (2, 2, 7, 6, 24)); a Slice it
    folds right."""
    nodes = list(model.graph.node)
    if not any(n.op_type == "Shape" and n.domain in ("", "ai.onnx") and n.attribute for n in nodes):
        return model
    out: list[onnx.NodeProto] = []
    for i, n in enumerate(nodes):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Shape" or n.domain not in ("", "ai.onnx") or not attrs:
            kept = onnx.NodeProto()
            kept.CopyFrom(n)  # a detached copy: the repeated field is cleared below
            out.append(kept)
            continue
        tag = f"{n.name or n.output[0]}::range{i}"
        bounds = [(f"{tag}/starts", int(attrs.get("start", 0))), (f"{tag}/ends", int(attrs.get("end", 2**62))),
                  (f"{tag}/axes", 0)]
        model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), name) for name, v in bounds)
        out.append(onnx.helper.make_node("Shape", list(n.input), [f"{tag}/shape"], name=n.name))
        out.append(onnx.helper.make_node("Slice", [f"{tag}/shape", *(name for name, _ in bounds)], list(n.output),
                                         name=f"{tag}/slice"))
    del model.graph.node[:]
    model.graph.node.extend(out)
    return model


MAX_FOLD_ROUNDS = 8


def fold_until_stable(model: onnx.ModelProto) -> onnx.ModelProto:
    """:func:`fold`, again while ``Shape`` nodes remain and each round removes nodes: a shape that only
    inference after a fold makes static (Swin's window padding, computed from ``Shape`` of a folded tensor)
    is folded by the next round. Graphs whose shape arithmetic folds at once (most CNNs) take one round."""
    model = fold(model)
    for _ in range(MAX_FOLD_ROUNDS - 1):
        if not any(n.op_type == "Shape" for n in model.graph.node):
            break
        again = fold(model)
        if len(again.graph.node) >= len(model.graph.node):
            break
        model = again
    return model


def name_nodes(graph: gs.Graph) -> None:
    """Give every node a unique, stable name: plans, reports and ``--exclude`` refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        name = node.name or f"{node.op}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)

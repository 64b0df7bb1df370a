"""Small onnx-graphsurgeon helpers every graph rewrite here needs (emitters, oracles, passes)."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs


def export_like(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` with ``model``'s IR version, opset imports and graph name (graphsurgeon picks its own)."""
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.graph.name = model.graph.name
    return out


def reroute(consumers: list[gs.Node], old: gs.Tensor, new: gs.Tensor) -> None:
    """Make ``consumers`` read ``new`` wherever they read ``old``."""
    for node in consumers:
        for i, inp in enumerate(node.inputs):
            if inp is old:
                node.inputs[i] = new

"""Small onnx-graphsurgeon helpers every graph rewrite here needs (emitters, oracles, passes)."""

from __future__ import annotations

import math

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.logger import G_LOGGER


# graphsurgeon prints its log with print(), to stdout: its constant-folding warnings ("Inference failed …") and a
# note that the colored module is missing landed before the JSON of `inspect --json` and broke pipelines. Its
# warnings are about its own fallbacks, which graphprune checks for itself (shapes, verification), so only its
# critical messages (which raise) are left; colours off so it never asks for a module.
G_LOGGER.colors = False
G_LOGGER.severity = G_LOGGER.CRITICAL

LEAN_MIN_ELEMENTS = 4096  # smaller constants (shapes, axes, biases) go through graphsurgeon's export as they are


def export_like(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` with ``model``'s IR version, opset imports and graph name (graphsurgeon picks its own)."""
    out = export_lean(graph)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.graph.name = model.graph.name
    keep_outer_weights(out, model)
    return out


def keep_outer_weights(out: onnx.ModelProto, model: onnx.ModelProto) -> None:
    """Put each initializer that was ``model``'s, at its top level, back at ``out``'s top level, once.

    graphsurgeon exports a constant in the graph whose node reads it, so an outer weight read only inside an ``If``
    branch or a ``Loop`` body comes back as an initializer of each such subgraph: a copy per branch, and no longer a
    weight of the model's own graph (cost, channel analysis)."""
    if not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in out.graph.node
               for a in n.attribute):
        return
    outer = {i.name for i in model.graph.initializer}
    present = {i.name for i in out.graph.initializer}
    for sub in nested_graphs(out.graph):
        moved = [k for k, i in enumerate(sub.initializer) if i.name in outer]
        out.graph.initializer.extend(sub.initializer[k] for k in moved if sub.initializer[k].name not in present)
        present.update(sub.initializer[k].name for k in moved)
        for k in reversed(moved):
            del sub.initializer[k]


def nested_graphs(graph: onnx.GraphProto):
    """Every subgraph of ``graph``'s nodes, nested ones too."""
    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
            for sub in subs:
                yield sub
                yield from nested_graphs(sub)


def export_lean(graph: gs.Graph) -> onnx.ModelProto:
    """``gs.export_onnx(graph)``, with every weight copied once, straight into the result.

    graphsurgeon builds the graph proto from the initializers, then the model from the graph, so each weight is
    copied twice and for a moment the input model, its graph and its model copy are all alive (3× the weights).
    Here the large top-level constants are exported stripped to their type and dims, then each one's data is put into
    place one tensor at a time (the input and the output, no more). ``graph`` is left as it was."""
    constants = [t for t in graph.tensors().values()
                 if isinstance(t, gs.Constant) and not is_sparse(t) and math.prod(t.shape) >= LEAN_MIN_ELEMENTS]
    held = {c.name: c._values for c in constants}  # graphsurgeon's own exporter reads _values: no public accessor
    try:
        for c in constants:
            c._values = LazyValues(stripped(c))
        out = gs.export_onnx(graph, do_type_check=False)
    finally:
        for c in constants:
            c._values = held[c.name]
    by_name = {c.name: c for c in constants}
    for init in out.graph.initializer:
        const = by_name.get(init.name)
        if const is not None:
            values = const._values
            init.CopyFrom(values.tensor if isinstance(values, LazyValues) else OnnxExporter.export_tensor_proto(const))
            init.name = const.name
    return out


def stripped(const: gs.Constant) -> onnx.TensorProto:
    """A tensor proto with ``const``'s name, element type (as it will be exported) and dims, and no data."""
    t = onnx.TensorProto()
    t.name = const.name
    t.dims.extend(int(d) for d in const.shape)
    values = const._values
    t.data_type = values.tensor.data_type if isinstance(values, LazyValues) else dtype_to_onnx(const.export_dtype)
    return t


def is_sparse(const: gs.Constant) -> bool:
    return isinstance(const._values, SparseValues)


def reroute(consumers: list[gs.Node], old: gs.Tensor, new: gs.Tensor) -> None:
    """Make ``consumers`` read ``new`` wherever they read ``old``."""
    for node in consumers:
        for i, inp in enumerate(node.inputs):
            if inp is old:
                node.inputs[i] = new

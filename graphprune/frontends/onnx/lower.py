"""ONNX → IR: a folded, shape-inferred proto lowered to :class:`graphprune.ir.Graph` (subgraphs become captures)."""

from __future__ import annotations

import functools
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.errors import ModelLoadError
from graphprune.frontends.onnx.proto import SKELETON_MIN_ELEMENTS, default_opset, first_line
from graphprune.ir import Graph, Node, Tensor


def to_ir(model: onnx.ModelProto) -> Graph:
    """Lower a folded, shape-inferred proto to the IR (top-level graph; subgraphs become captures, and bodies for
    counting their cost)."""
    return lower_graph(model.graph, {}, default_opset(model) or 0)


def lower_graph(g: onnx.GraphProto, outer: Mapping[str, Tensor], opset: int) -> Graph:
    """``g`` as an IR graph. ``outer``: the enclosing scope's tensors (for a subgraph), of which the names ``g``
    reads enter its graph with their shape and type only, so a body's weights read from outside are counted once,
    in the graph that holds them."""
    tensors: dict[str, Tensor] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tensors[vi.name] = value_info_tensor(vi)
    for init in g.initializer:
        tensors[init.name] = initializer_tensor(init)
    scope = {**outer, **tensors}
    nodes = tuple(lower_node(n, scope, opset) for n in g.node)
    for n in nodes:
        for t in n.touched:
            if t not in tensors:
                seen = outer.get(t)
                tensors[t] = Tensor(t, None, None) if seen is None else Tensor(t, seen.shape, seen.dtype)
    inits = {i.name for i in g.initializer}
    return Graph(nodes=nodes, tensors=tensors, inputs=tuple(i.name for i in g.input if i.name not in inits),
                 outputs=tuple(o.name for o in g.output), opset=opset)


def initializer_tensor(init: onnx.TensorProto) -> Tensor:
    """A constant of the IR. Small ones (shapes, axes, scales: what rules read) are decoded now; large ones are
    decoded from ``init`` when read, so that the weights live once, in the proto (which the IR keeps alive)."""
    shape = tuple(int(d) for d in init.dims)
    if int(np.prod(shape, dtype=np.int64)) < SKELETON_MIN_ELEMENTS or init.data_type == onnx.TensorProto.STRING:
        arr = decoded(init)
        return Tensor(init.name, tuple(arr.shape), arr.dtype, arr)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    except Exception as exc:
        raise ModelLoadError(f"initializer '{init.name}' has unknown element type {init.data_type}") from exc
    return Tensor(init.name, shape, dtype, functools.partial(decoded, init))


def decoded(init: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(init)
    except Exception as exc:
        raise ModelLoadError(f"initializer '{init.name}' is corrupt: {first_line(exc)}") from exc


def value_info_tensor(vi: onnx.ValueInfoProto) -> Tensor:
    tt = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        shape = dims if all(d >= 0 for d in dims) else None
    return Tensor(vi.name, shape, dtype)


def lower_node(node: onnx.NodeProto, scope: Mapping[str, Tensor], opset: int) -> Node:
    attrs, captures, bodies = {}, [], []
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            captures += [t for sub in graphs for t in outer_names(sub)]
            bodies += [lower_graph(sub, scope, opset) for sub in graphs]
            attrs[a.name] = "<subgraph>"
        else:
            value = onnx.helper.get_attribute_value(a)
            attrs[a.name] = decode(value)
    return Node(name=node.name, op=node.op_type, inputs=tuple(node.input), outputs=tuple(node.output),
                attrs=attrs, domain=node.domain, captures=tuple(dict.fromkeys(captures)), bodies=tuple(bodies),
                source=node.name)


def decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return value


def outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads but does not define: tensors captured from the enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: list[str] = []
    for n in graph.node:
        used += [t for t in n.input if t and t not in defined]
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
            used += [t for s in subs for t in outer_names(s) if t not in defined]
        defined.update(n.output)
    return used

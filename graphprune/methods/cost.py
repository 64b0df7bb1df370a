"""Parameter and multiply-accumulate counts from static shapes (per model run at the analysed input shape)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from graphprune.channels.layers import MAC_OPS, RECURRENT_OPS, operands
from graphprune.channels.quantized import INTEGER_LINEAR
from graphprune.ir import Graph, Node


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    per_node_macs: Mapping[str, int]

    def ratio(self, other: "Cost") -> tuple[float, float]:
        """(params, MACs) of ``other`` relative to this one."""
        return other.params / max(self.params, 1), other.macs / max(self.macs, 1)


QUANTIZED_RECURRENT = {"DynamicQuantizeLSTM": "LSTM"}  # com.microsoft; W / R transposed: the same products


def as_float(node: Node) -> Node:
    """An integer linear op (ConvInteger, QLinearMatMul …) as the float op it computes, ``a`` and ``b`` as its
    inputs 0 and 1, so it counts the MACs its float form does; anything else as it is."""
    q = INTEGER_LINEAR.get(node.op)
    if q is not None:
        return dataclasses.replace(node, op=q.kind, inputs=(node.inputs[q.a], node.inputs[q.b]))
    if node.op in QUANTIZED_RECURRENT:
        return dataclasses.replace(node, op=QUANTIZED_RECURRENT[node.op])
    return node


def node_macs(graph: Graph, node: Node) -> int:
    node = as_float(node)
    shape = graph.shape
    try:
        if node.op == "Conv":
            w, y = shape(node.inputs[1]), shape(node.outputs[0])
            return int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
        if node.op == "ConvTranspose":
            x, w = shape(node.inputs[0]), shape(node.inputs[1])
            return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
        if node.op in ("Gemm", "MatMul"):  # every output element sums over the contracted axis of input 0
            ops = operands(node, lambda name: len(s) if (s := shape(name)) is not None else None)
            a, y = shape(node.inputs[ops.x]), shape(node.outputs[0])
            return int(np.prod(y, dtype=np.int64) * a[ops.x_axis])
        if node.op in RECURRENT_OPS:  # W and R stack every gate and direction: per step, W·x + R·h
            w, r, x = shape(node.inputs[1]), shape(node.inputs[2]), shape(node.inputs[0])
            steps_times_batch = x[0] * x[1]  # (T, B) or (B, T): the product is the same
            return int(steps_times_batch * (np.prod(w, dtype=np.int64) + np.prod(r, dtype=np.int64)))
    except (TypeError, IndexError, AttributeError):
        return 0  # unknown shapes: not counted
    return 0


def cost(graph: Graph) -> Cost:
    """Params stored and MACs of one run. Control flow counts too: the weights its bodies hold, and the MACs of a
    run through them (:func:`body_cost`) under the name of the node that holds them."""
    params = sum(int(np.prod(t.shape, dtype=np.int64)) for t in graph.params.values())
    per_node = {n.name: m for n in graph.nodes if as_float(n).op in MAC_OPS and (m := node_macs(graph, n))}
    for n in graph.nodes:
        if n.bodies:
            body_params, body_macs = body_cost(graph, n)
            params += body_params
            if body_macs:
                per_node[n.name] = body_macs
    return Cost(params, int(sum(per_node.values())), MappingProxyType(per_node))


def body_cost(graph: Graph, node: Node) -> tuple[int, int]:
    """(params, MACs) inside ``node``'s subgraphs. An If runs one branch: its MACs are the larger branch's (the
    cost of a run can only be bounded when the condition is known at run time). A Loop runs its body M times when
    M is a constant, a Scan once per slice of its first scan input; a trip count known only at run time counts
    one iteration."""
    costs = [cost(body) for body in node.bodies]
    params = sum(c.params for c in costs)
    if node.op == "If":
        return params, max(c.macs for c in costs)
    return params, trips(graph, node) * sum(c.macs for c in costs)


def trips(graph: Graph, node: Node) -> int:
    if node.op == "Loop":
        m = graph.value(node.input(0))
        return int(m.reshape(-1)[0]) if m is not None and m.size == 1 else 1
    if node.op == "Scan" and node.attr("num_scan_inputs"):
        first = node.inputs[len(node.inputs) - int(node.attr("num_scan_inputs"))]
        axes = node.attr("scan_input_axes") or (0,)
        shape = graph.shape(first)
        return int(shape[int(axes[0]) % len(shape)]) if shape else 1
    return 1

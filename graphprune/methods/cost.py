"""Parameter and multiply-accumulate counts from static shapes (per model run at the analysed input shape)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from graphprune.channels.layers import MAC_OPS, RECURRENT_OPS, operands
from graphprune.ir import Graph, Node


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    per_node_macs: Mapping[str, int]

    def ratio(self, other: "Cost") -> tuple[float, float]:
        """(params, MACs) of ``other`` relative to this one."""
        return other.params / max(self.params, 1), other.macs / max(self.macs, 1)


def node_macs(graph: Graph, node: Node) -> int:
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
    params = sum(int(np.prod(t.shape, dtype=np.int64)) for t in graph.params.values())
    per_node = {n.name: m for n in graph.nodes if n.op in MAC_OPS and (m := node_macs(graph, n))}
    return Cost(params, int(sum(per_node.values())), MappingProxyType(per_node))

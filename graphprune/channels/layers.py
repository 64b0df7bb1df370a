"""The one description of weighted layers: which input of a Conv / ConvTranspose / Gemm / MatMul is the weight,
which is the activation, and which of their axes are the input and output channels.

:func:`operands` says it for any such node from its attributes and ranks (the channel rules use it whether or not
the weight is a constant); :func:`weighted_layers` lists, once per graph, the nodes whose weight is a constant and
whose other operand is an activation: what cost, budget, sensitivity, low rank and the reports call a layer.
A MatMul reading ``Transpose(W)`` of a constant 2-D ``W`` alone (the torch lowering of an ``nn.Linear`` on an N-D
input, ``x @ W.T``) is the layer of ``W`` itself, its operands those of the stored (out, in) matrix: the weight a
refit writes and a score reads is the parameter, not a tensor the lowering made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from graphprune.ir import Graph, Node

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")  # W and R stack every gate and direction: per step, W·x + R·h
MAC_OPS = LINEAR_OPS + RECURRENT_OPS  # the ops that count multiply-accumulates (graphprune.methods.cost)


@dataclass(frozen=True)
class Operands:
    """Input ``x`` (index) is the activation, its axis ``x_axis`` the channels (features) it reads; input ``w``
    the weight, whose axis ``w_in`` matches ``x_axis`` and ``w_out`` the output's channel axis ``y_axis``."""

    x: int
    x_axis: int
    w: int
    w_in: int
    w_out: int
    y_axis: int

    @property
    def transposed(self) -> bool:
        """Whether the stored weight is (out, in) rather than (in, out) as the product sees it."""
        return self.w_out < self.w_in


def operands(node: Node, rank: Callable[[str], int | None], weight: int = 1) -> Operands | None:
    """The operands of a linear ``node`` with its weight at input ``weight`` (1; a MatMul ``W @ X`` has it at 0),
    from its attributes and the ranks ``rank(name)``; None for other ops or ranks this does not describe."""
    ins = node.inputs
    if node.op not in LINEAR_OPS or len(ins) < 2 or not node.outputs:
        return None
    if node.op == "Conv":
        return Operands(0, 1, 1, 1, 0, 1)
    if node.op == "ConvTranspose":
        return Operands(0, 1, 1, 0, 1, 1)
    if node.op == "Gemm":
        ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
        return Operands(0, 1 - ta, 1, tb, 1 - tb, 1)
    rx, rw, ry = rank(ins[1 - weight]), rank(ins[weight]), rank(node.outputs[0])
    if rx is None or rw is None or ry is None or rx < 2 or rw < 2:
        return None
    if weight == 1:  # X @ W: X[..., K] · W[..., K, N]
        return Operands(0, rx - 1, 1, rw - 2, rw - 1, ry - 1)
    return Operands(1, rx - 2, 0, rw - 1, rw - 2, ry - 2)  # W @ X: W[..., N, K] · X[..., K, M]


@dataclass(frozen=True)
class WeightedLayer:
    """A linear node with a constant weight and an activation input of known shapes."""

    node: Node
    ops: Operands
    groups: int = 1
    through: str | None = None  # the constant W of a weight input computed as Transpose(W) (see the module doc)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def x(self) -> str:
        return self.node.inputs[self.ops.x]

    @property
    def weight(self) -> str:
        return self.through or self.node.inputs[self.ops.w]

    @property
    def y(self) -> str:
        return self.node.outputs[0]


def weighted_layer(graph: Graph, node: Node) -> WeightedLayer | None:
    """``node`` as a weighted layer, or None (not linear, no constant weight, or shapes unknown)."""
    if node.op not in LINEAR_OPS or len(node.inputs) < 2 or not node.outputs:
        return None
    weight = 0 if node.op == "MatMul" and graph.is_const(node.inputs[0]) and not graph.is_const(node.inputs[1]) else 1
    ops = operands(node, lambda name: len(s) if (s := graph.shape(name)) is not None else None, weight)
    if ops is None:
        return None
    x, w, y = node.inputs[ops.x], node.inputs[ops.w], node.outputs[0]
    if graph.is_const(x) or graph.shape(x) is None or graph.shape(y) is None:
        return None
    if not graph.is_const(w):
        source = transposed_constant(graph, node, w) if node.op == "MatMul" and ops.w == 1 else None
        if source is None:
            return None
        return WeightedLayer(node, Operands(ops.x, ops.x_axis, ops.w, 1, 0, ops.y_axis), through=source)
    if node.op in ("Conv", "ConvTranspose") and len(graph.shape(x)) < 3:
        return None
    return WeightedLayer(node, ops, int(node.attr("group", 1)) if node.op in ("Conv", "ConvTranspose") else 1)


def transposed_constant(graph: Graph, node: Node, w: str) -> str | None:
    """The constant 2-D ``W`` when ``w`` is ``Transpose(W)`` (perm 1, 0) read by ``node`` alone, else None."""
    producer = graph.producers.get(w)
    if producer is None or producer.op != "Transpose" or w in graph.outputs:
        return None
    source = producer.inputs[0]
    perm = tuple(int(p) for p in (producer.attr("perm") or (1, 0)))
    readers = graph.consumers.get(w, ())
    if not graph.is_const(source) or graph.tensor(source).rank != 2 or perm != (1, 0) or len(readers) != 1:
        return None
    return source


def weighted_layers(graph: Graph) -> tuple[WeightedLayer, ...]:
    """Every weighted layer of ``graph``, in node order (computed once per graph)."""
    return graph.memo("weighted_layers", lambda g: tuple(lay for n in g.nodes if (lay := weighted_layer(g, n))))


def layer_of(graph: Graph, name: str) -> WeightedLayer | None:
    """The weighted layer of node ``name``, if it is one."""
    by_name = graph.memo("weighted_layers_by_name", lambda g: {lay.name: lay for lay in weighted_layers(g)})
    return by_name.get(name)

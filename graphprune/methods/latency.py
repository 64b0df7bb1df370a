"""Latency as a function of channel counts, fitted to what the runtime measured (HALP's per-layer latency table,
as curves rather than a lookup).

The model is profiled at a few widths (every prunable group narrowed to the same fraction; the frontend emits and
profiles them). Each node's kernel time is then fitted over those versions as

    t = a + b · MACs + c · elements        (a, b, c ≥ 0: time never falls as work grows)

where ``elements`` counts every value the node reads and writes (weights included): compute-bound kernels follow
the MACs, memory-bound ones (depthwise convs, concats, norms, element-wise ops) the elements. Kernel times are
medians over runs (a preempted run does not count). Kernels the runtime adds itself (layout reorders) are one
more such curve on the whole graph's activation elements. A run's wall time is then ``κ · kernels + c`` (the
session's overhead, and the gaps between kernels), fitted over the versions too. The prediction for any channel
counts is that sum at those shapes: microseconds per node, so a budget search can ask thousands of times.

Which kernel is which node: onnxruntime names a kernel after its node, or after the node's output tensor with a
suffix when it converted the node's layout (``…_output_0_nchwc``) or fused it (``…/QuickGeluFusion/``): the
longest prefix of the kernel name that is a node or tensor name decides (:func:`attribute`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.layers import MAC_OPS
from graphprune.channels.rules import Space
from graphprune.ir import Graph, Node
from graphprune.methods.budget import ShapeView
from graphprune.methods.cost import node_macs

FORMAT = 1  # of the cached table (bump when the model changes meaning)
CUT = re.compile(r"[_/]")


def attribute(kernels: Mapping[str, str], graph: Graph) -> dict[str, str | None]:
    """Each kernel (name → the op type the runtime ran) → the IR node whose work it does, or None for a kernel of
    the runtime's own (a layout reorder). First the longest prefix of the kernel's name, cut at ``_`` or ``/``,
    that names a node (or a tensor: its producer). A fused kernel is named after the last node of its chain (a
    ``Conv`` kernel called ``…/Relu_output_0_nchwc`` computes Conv → Add → Relu), so when the op types differ the
    chain is walked up, through tensors read by one node only, to the node of the kernel's op type."""
    nodes = {n.name: n for n in graph.nodes}
    out: dict[str, str | None] = {}
    for kernel, op in kernels.items():
        node = named(kernel, nodes, graph.producers)
        out[kernel] = None if node is None else fused_head(node, op, graph).name
    return out


def named(kernel: str, nodes: Mapping[str, Node], producer: Mapping[str, Node]) -> Node | None:
    for end in [len(kernel)] + [m.start() for m in CUT.finditer(kernel)][::-1]:
        prefix = kernel[:end]
        if prefix in nodes or prefix in producer:
            return nodes.get(prefix) or producer[prefix]
    return None


def fused_head(node: Node, op: str, graph: Graph) -> Node:
    """The node of op type ``op`` up ``node``'s single-reader chain, else ``node`` itself."""
    producer, readers = graph.producers, graph.consumers
    at = node
    for _ in range(8):  # fusions chain a few ops at most
        if at.op == op:
            return at
        up = [producer[i] for i in at.inputs if i in producer and len(readers.get(i, ())) == 1]
        if not up:
            break
        at = up[0]
    return node


def elements(view, names: Iterable[str]) -> int:
    total = 0
    for name in names:
        shape = view.shape(name) if name else None
        if shape is not None and all(isinstance(d, (int, np.integer)) for d in shape):
            total += int(np.prod(shape, dtype=np.int64))
    return total


def node_features(view, node: Node) -> tuple[int, int]:
    """(MACs, elements read and written) of ``node`` at the shapes ``view`` gives."""
    macs = node_macs(view, node) if node.op in MAC_OPS else 0
    return macs, elements(view, (*node.inputs, *node.outputs))


def activation_elements(view, graph: Graph) -> int:
    """Every value the graph computes (not its constants): what the runtime's own layout reorders scale with."""
    return elements(view, [o for n in graph.nodes for o in n.outputs])


@dataclass(frozen=True)
class Sample:
    """One profiled version of the model: each node's features and kernel time (0 for a node whose work the
    runtime fused into another's kernel), the time of kernels of no node, and the wall time of a run."""

    features: np.ndarray  # (nodes, 2): MACs, elements
    node_ms: np.ndarray  # (nodes,)
    activations: int
    other_ms: float
    wall_ms: float


@dataclass(frozen=True, eq=False)
class LatencyTable:
    """Fitted per-node curves (``coef[i]`` = a, b, c of ``nodes[i]``), the runtime's own kernels' curve
    (``other``: a, b on activation elements), wall time from kernel time (``wall``: c, κ), the fit's relative
    error on the profiled versions (whole-model latency, leave-one-out), and what it was measured on (``key``)."""

    nodes: tuple[str, ...]
    coef: np.ndarray
    other: np.ndarray
    wall: np.ndarray
    fit_error: float
    key: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, cg: ChannelGraph, sizes: Mapping[Space, int] | None = None) -> float:
        """Predicted latency (ms) of one run with the spaces in ``sizes`` resized (none: the model as it is)."""
        view = ShapeView(cg, sizes or {})
        by_name = cg.graph.memo("nodes_by_name", lambda g: {n.name: n for n in g.nodes})  # once, not per bisection step
        feats = np.array([node_features(view, by_name[name]) for name in self.nodes], np.float64).reshape(-1, 2)
        return float(self.curve(feats, activation_elements(view, cg.graph)))

    def curve(self, feats: np.ndarray, activations: int) -> float:
        return self.wall[0] + self.wall[1] * kernel_ms(self.coef, self.other, feats, activations)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "nodes": list(self.nodes), "coef": self.coef.tolist(), "other": self.other.tolist(),
                "wall": self.wall.tolist(), "fit_error": self.fit_error, "key": dict(self.key)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "LatencyTable | None":
        """The table, or None for one written by another version of this model (measure again)."""
        if data.get("format") != FORMAT:
            return None
        coef = np.asarray(data["coef"], np.float64).reshape(-1, 3)
        return LatencyTable(tuple(data["nodes"]), coef, np.asarray(data["other"], np.float64),
                            np.asarray(data["wall"], np.float64), float(data["fit_error"]), dict(data.get("key", {})))


def fit_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``y`` on ``[1, x]`` in relative terms (each row divided by its ``y``: the
    narrow versions, whose times are small, count as much as the full one), columns scaled to 1 for
    conditioning."""
    design = np.column_stack([np.ones(len(y)), x])
    weight = 1.0 / np.maximum(y, max(float(y.max()), 1e-12) * 1e-3)
    scale = np.maximum(np.abs(design).max(axis=0), 1e-30)
    coef, _ = nnls(design / scale * weight[:, None], y * weight)
    return coef / scale


def kernel_ms(coef: np.ndarray, other: np.ndarray, feats: np.ndarray, activations: int) -> float:
    per_node = coef[:, 0] + coef[:, 1] * feats[:, 0] + coef[:, 2] * feats[:, 1]
    return float(per_node.sum() + other[0] + other[1] * activations)


def fit_parts(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    node_ms = np.stack([s.node_ms for s in samples], axis=1)  # (nodes, versions)
    feats = np.stack([s.features for s in samples], axis=1)  # (nodes, versions, 2)
    coef = np.zeros((node_ms.shape[0], 3))
    for i in np.flatnonzero(node_ms.max(axis=1) > 0):  # a node always fused into another's kernel costs nothing
        coef[i] = fit_curve(feats[i], node_ms[i])
    other = fit_curve(np.array([[s.activations] for s in samples], np.float64), np.array([s.other_ms for s in samples]))
    kernels = np.array([[kernel_ms(coef, other, s.features, s.activations)] for s in samples])
    wall = fit_curve(kernels, np.array([s.wall_ms for s in samples]))
    return coef, other, wall


def fit(nodes: Sequence[str], samples: Sequence[Sample], key: Mapping[str, Any] | None = None) -> LatencyTable:
    """The table fitted to every sample, with its leave-one-out relative error of whole-model latency (each
    version predicted by the curves fitted to the others: how far a plan between them may be off)."""
    errors = []
    for left in range(len(samples)) if len(samples) > 3 else ():
        rest = [s for i, s in enumerate(samples) if i != left]
        table = LatencyTable(tuple(nodes), *fit_parts(rest), 0.0)
        s = samples[left]
        errors.append(abs(table.curve(s.features, s.activations) - s.wall_ms) / max(s.wall_ms, 1e-9))
    return LatencyTable(tuple(nodes), *fit_parts(samples), float(max(errors)) if errors else float("nan"),
                        dict(key or {}))

"""Where a pruned model's time goes: onnxruntime's kernels before and after, next to the *work-bound*.

The MACs ratio is what pruning promises; the latency ratio is what onnxruntime delivers. They differ for two
reasons, and this tells them apart. (1) Work that is not MACs: LayerNorm, GELU, Softmax, a Transpose or a Concat
costs time in proportion to the elements it reads and writes, which fall with a width, not with its square, so
halving every width halves them while the MACs fall 4×. (2) Overhead in the emitted graph: a kernel slower per
unit of work than before (a lost fusion, a Gemm width that suits the CPU's blocking badly, an extra node).

Each kernel of the original is attributed to its IR node (:func:`graphprune.methods.latency.attribute`, fused
kernels included), its node's work taken in both models (MACs for Conv / Gemm / MatMul, elements read and written
for every other op; a kernel of the runtime's own, a layout reorder, by the activations), and its time scaled by
that work ratio: the *bound*, a pruned model whose every kernel falls exactly with its work. ``bound_efficiency``
(bound speed-up ÷ MACs speed-up) is then the most any pruning to these widths can give on this runtime, and
``kernel_over_bound`` (bound time ÷ measured) how much of it the emitted graph realises (1.0: no overhead).
Nodes are matched by name, which graphprune's emitters keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from graphprune import runtime
from graphprune.channels.layers import MAC_OPS
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.ir import Graph
from graphprune.methods.cost import cost
from graphprune.methods.latency import activation_elements, attribute, node_features


@dataclass(frozen=True)
class OpTime:
    """One op type's kernel time (ms per run), before, after and at the bound."""

    before_ms: float
    after_ms: float
    bound_ms: float


@dataclass(frozen=True)
class KernelBreakdown:
    ops: Mapping[str, OpTime]  # by the op type onnxruntime ran, the costliest in the original first
    macs_ratio: float  # MACs after / before

    @property
    def before_ms(self) -> float:
        return sum(o.before_ms for o in self.ops.values())

    @property
    def after_ms(self) -> float:
        return sum(o.after_ms for o in self.ops.values())

    @property
    def bound_ms(self) -> float:
        return sum(o.bound_ms for o in self.ops.values())

    def to_json(self) -> dict:
        b, a, i = self.before_ms, self.after_ms, self.bound_ms
        return {"kernel_ms_before": b, "kernel_ms_after": a, "bound_ms_after": i, "macs_ratio": self.macs_ratio,
                "kernel_speedup": b / a, "bound_speedup": b / i, "kernel_efficiency": b / a * self.macs_ratio,
                "bound_efficiency": b / i * self.macs_ratio, "kernel_over_bound": i / a,
                "ops": {op: {"before_ms": t.before_ms, "after_ms": t.after_ms, "bound_ms": t.bound_ms,
                             "share_before": t.before_ms / b} for op, t in self.ops.items()}}


def work(graph: Graph, name: str) -> float:
    """The work of node ``name`` of ``graph``: its MACs for a MAC op, else the elements it reads and writes."""
    node = graph.node_by_name[name]
    macs_, elements = node_features(graph, node)
    return float(macs_ if node.op in MAC_OPS and macs_ else elements)


def breakdown(before: LoadedModel, after: LoadedModel, *, threads: int = 1, runs: int = 20) -> KernelBreakdown:
    """Profile ``before`` and ``after`` (taking turns, the same seeded inputs) and set each kernel against its
    work-bound. ``threads`` defaults to 1: per-kernel times of a multi-threaded run include the pool's waits."""
    feeds = runtime.seeded_inputs(before.model, before.input_shapes)
    prof_b, prof_a = runtime.profile([before.model, after.model], feeds, runs=runs, threads=threads)
    owner_b, owner_a = attribute(prof_b.op_types, before.graph), attribute(prof_a.op_types, after.graph)
    layout = activation_elements(after.graph, after.graph) / max(1, activation_elements(before.graph, before.graph))
    totals: dict[str, list[float]] = {}

    def add(op: str, before_ms: float = 0.0, after_ms: float = 0.0, bound_ms: float = 0.0) -> None:
        row = totals.setdefault(op, [0.0, 0.0, 0.0])
        row[0] += before_ms
        row[1] += after_ms
        row[2] += bound_ms

    for kernel, ms in prof_b.kernel_ms.items():
        node, op = owner_b[kernel], prof_b.op_types[kernel]
        if node is None:  # the runtime's own (layout reorders): their names differ per session, so in aggregate
            add(op, ms, bound_ms=ms * layout)
        elif node in after.graph.node_by_name:
            w_b = work(before.graph, node)
            add(op, ms, prof_a.kernel_ms.get(kernel, 0.0), ms * (work(after.graph, node) / w_b if w_b else 1.0))
        else:  # the pruned model has no such node: nothing to scale by, its kernel counts as measured
            add(op, ms, prof_a.kernel_ms.get(kernel, 0.0), prof_a.kernel_ms.get(kernel, 0.0))
    for kernel, ms in prof_a.kernel_ms.items():
        if owner_a[kernel] is None or kernel not in prof_b.kernel_ms:  # layout, or a kernel only the pruned runs
            add(prof_a.op_types[kernel], after_ms=ms)
    ops = {op: OpTime(*t) for op, t in sorted(totals.items(), key=lambda kv: -kv[1][0])}
    return KernelBreakdown(ops, cost(after.graph).macs / max(1, cost(before.graph).macs))

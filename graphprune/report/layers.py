"""Per-layer and per-group facts that both the prune report and ``graphprune inspect`` show: each weighted
layer's channels and parameters before / after a plan, and the nodes each channel group couples."""

from __future__ import annotations

from typing import Any, Mapping

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.layers import layer_of
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.ir import Graph, Node


def layer_axes(graph: Graph, node: Node) -> tuple[Space, Space] | None:
    """(input-channel space, output-channel space) of a weighted layer whose weight is its input 1
    (:mod:`graphprune.channels.layers`), or None when it is not one."""
    lay = layer_of(graph, node.name)
    if lay is None or lay.ops.w != 1:
        return None
    return Space(lay.x, lay.ops.x_axis), Space(lay.y, lay.ops.y_axis)


def kept_count(plan: Plan | None, space: Space, size: int) -> int:
    if plan is None or space not in plan.keep:
        return size
    return int(len(plan.keep[space]))


def const_inputs(graph: Graph, node: Node) -> list[str]:
    out = []
    for t in node.inputs:
        v = graph.value(t) if t else None
        if v is not None and v.dtype.kind == "f" and t not in out:
            out.append(t)
    return out


def params_after(graph: Graph, tensors: list[str], plan: Plan | None) -> int:
    total = 0
    for t in tensors:
        shape = graph.shape(t) or ()
        n = 1
        for k, d in enumerate(shape):
            n *= kept_count(plan, Space(t, k), d)
        total += n
    return total


def space_owner(graph: Graph, space: Space) -> tuple[str, str]:
    """(node name, role) that explains a space: the producer of an activation, the reader of a parameter."""
    if space.virtual:
        return space.tensor, "groups of"
    prod = graph.producers.get(space.tensor)
    if prod is not None:
        return prod.name, "output of"
    if space.tensor in graph.inputs:
        return space.tensor, "graph input"
    readers = graph.consumers.get(space.tensor, ())
    if readers:
        return readers[0].name, "parameter of"
    return space.tensor, "tensor"


def layer_rows(graph: Graph, cg: ChannelGraph | None, plan: Plan | None = None,
               per_node_macs: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One row per weighted layer (Conv, ConvTranspose, Gemm, MatMul with a constant weight): channel counts and
    parameters before / after ``plan``."""
    rows = []
    for node in graph.nodes:
        axes = layer_axes(graph, node)
        if axes is None:
            continue
        sin, sout = axes
        nin, nout = graph.shape(sin.tensor)[sin.axis], graph.shape(sout.tensor)[sout.axis]
        consts = const_inputs(graph, node)
        row = {"name": node.name, "op": node.op, "weight": node.inputs[1],
               "in": {"before": int(nin), "after": kept_count(plan, sin, nin)},
               "out": {"before": int(nout), "after": kept_count(plan, sout, nout)},
               "params": {"before": params_after(graph, consts, None), "after": params_after(graph, consts, plan)}}
        if cg is not None:
            row["group_in"], row["group_out"] = cg.group_of.get(sin), cg.group_of.get(sout)
        if per_node_macs is not None:
            row["macs"] = int(per_node_macs.get(node.name, 0))
        rows.append(row)
    return rows


def nodes_of_groups(graph: Graph, cg: ChannelGraph,
                    axes: Mapping[str, tuple[Space, Space]] | None = None) -> dict[int, dict[str, list[str]]]:
    """Per group, the nodes it couples: weighted layers whose output channels are in it (``produced_by``),
    weighted layers that read it as input channels (``read_by``), and every other node with a coupling in it
    (``through``). One pass over the nodes and the couplings: linear in the graph size."""
    if axes is None:
        axes = {n.name: a for n in graph.nodes if (a := layer_axes(graph, n)) is not None}
    out: dict[int, dict[str, list[str]]] = {}

    def entry(gid: int) -> dict[str, list[str]]:
        return out.setdefault(gid, {"produced_by": [], "read_by": [], "through": []})

    layer_groups: dict[str, set[int]] = {}
    for name, (sin, sout) in axes.items():
        if sout in cg.group_of:
            entry(cg.group_of[sout])["produced_by"].append(name)
            layer_groups.setdefault(name, set()).add(cg.group_of[sout])
        if sin in cg.group_of:
            entry(cg.group_of[sin])["read_by"].append(name)
            layer_groups.setdefault(name, set()).add(cg.group_of[sin])
    seen: set[tuple[int, str]] = set()
    for a, _, data in cg.nx.edges(data=True):
        gid, node = cg.group_of[a], data["node"]
        if (gid, node) not in seen and gid not in layer_groups.get(node, ()):
            seen.add((gid, node))
            entry(gid)["through"].append(node)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    for lists in out.values():
        for key in lists:
            lists[key].sort(key=lambda n: order.get(n, -1))
    return out


EMPTY_NODES = {"produced_by": [], "read_by": [], "through": []}

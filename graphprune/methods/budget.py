"""Params and MACs of a pruned model predicted from kept counts, without emitting it.

A budget search (PFP's ε) asks "if group g keeps its k_g best units, how big is the model?" many times.
For each space of a group, the atoms kept by the top-k units in a fixed order are a cumulative count, so a
tensor's new shape, and with it the parameter and MAC counts of :mod:`graphprune.cost`, follow from the
k's in microseconds. :func:`plan_cost` gives the exact numbers for a finished plan the same way.
:func:`round_kept` and :func:`keep_one_per_space` are the two rules every selection applies to a count (the
frontends' latency probes apply them too, so they live here, below the passes).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph, Group
from graphprune.channels.layers import MAC_OPS
from graphprune.methods.cost import node_macs
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space



class ShapeView:
    """Duck-types ``Graph.shape`` for :func:`graphprune.cost.node_macs`, with some axes resized."""

    def __init__(self, cg: ChannelGraph, sizes: Mapping[Space, int]):
        self.graph, self.sizes = cg.graph, sizes

    def shape(self, name: str):
        shape = self.graph.shape(name)
        if shape is None:
            return None
        return tuple(self.sizes.get(Space(name, a), d) for a, d in enumerate(shape))


def cost_of_sizes(cg: ChannelGraph, sizes: Mapping[Space, int], params=None, nodes=None) -> tuple[int, int]:
    """(params, MACs) of the graph with the spaces in ``sizes`` resized."""
    view = ShapeView(cg, sizes)
    params = cg.graph.params if params is None else params
    nodes = [n for n in cg.graph.nodes if n.op in MAC_OPS] if nodes is None else nodes
    n_params = sum(int(np.prod(view.shape(name), dtype=np.int64)) for name in params)
    return n_params, int(sum(node_macs(view, n) for n in nodes))


def plan_cost(cg: ChannelGraph, plan: Plan) -> tuple[int, int]:
    """Exact (params, MACs) after ``plan``."""
    return cost_of_sizes(cg, {s: len(k) for s, k in plan.keep.items() if not s.virtual})


class BudgetModel:
    """Cost as a function of per-group kept counts, each group keeping a prefix of ``orders[g]`` (best first)."""

    def __init__(self, cg: ChannelGraph, orders: Mapping[int, np.ndarray]):
        self.cg = cg
        self.cum: dict[Space, tuple[int, np.ndarray]] = {}
        for gid, order in orders.items():
            group = cg.groups[gid]
            for space, labels in group.labels.items():
                if space.virtual:
                    continue
                counts = np.bincount(labels, minlength=group.n_units)[np.asarray(order)]
                cum = np.concatenate([[0], np.cumsum(counts)])
                first = counts[counts > 0][0] if (counts > 0).any() else 0
                self.cum[space] = (gid, np.maximum(cum, first))  # a space never loses every atom (Select)
        self.params = list(cg.graph.params)
        self.nodes = [n for n in cg.graph.nodes if n.op in MAC_OPS]

    def sizes(self, kept: Mapping[int, int]) -> dict[Space, int]:
        return {s: int(cum[kept[g]]) for s, (g, cum) in self.cum.items() if g in kept}

    def cost(self, kept: Mapping[int, int]) -> tuple[int, int]:
        """(params, MACs) when group g keeps its ``kept[g]`` best units."""
        return cost_of_sizes(self.cg, self.sizes(kept), self.params, self.nodes)


def round_kept(n_units: int, n_remove: int, round_to: int, up: bool = False) -> int:
    """Units to remove once the kept count is rounded to the nearest multiple of ``round_to`` (at least one
    multiple; halves round up), or with ``up`` to the next multiple, so never more than ``n_remove`` go. Groups
    of at most ``round_to`` units are left as they are."""
    if round_to <= 1 or n_units <= round_to:
        return n_remove
    kept = n_units - n_remove
    multiples = math.ceil(kept / round_to) if up else math.floor(kept / round_to + 0.5)
    rounded = max(round_to, int(multiples) * round_to)
    return n_units - min(n_units, rounded)


def keep_one_per_space(group: Group, scores: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Give back the best unit of any space that would lose every atom."""
    removed = set(removed.tolist())
    for labels in group.labels.values():
        present = np.unique(labels)
        if all(u in removed for u in present.tolist()):
            removed.discard(int(present[np.argmax(scores[present])]))
    return np.array(sorted(removed), np.int64)

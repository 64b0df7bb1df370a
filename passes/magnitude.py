"""Magnitude scoring (Li et al. 2017): a unit's score is the L1 or L2 norm of every weight slice it owns.

For a coupled unit the norms of all its slices (producer filters, BN scale and shift, consumer input
columns) add up, as DepGraph does; BN running statistics are not weights and are left out.

A unit that nothing reads — every constant-weight layer reading the group's channels has an all-zero slice for it —
scores 0 whatever its producers hold: its contribution to every output is exactly zero, so ``--threshold 0``
removes it without changing the outputs. Without this an SE-gated block's dead channels scored above 0 from the
excitation layer's bias (which the gate's channels share with the block's) and a plain dead channel from its
BatchNorm shift, and no threshold could take them. Only where every reader is such a layer: a group also read by a
product of two activations, a recurrent op or a normalisation over its channels keeps the plain sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphprune.channels.analysis import ChannelGraph, Group
from graphprune.channels.layers import LINEAR_OPS, RECURRENT_OPS, layer_of
from graphprune.channels.quantized import centred_values
from graphprune.channels.rules.base import Space
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


def slice_norms(values: np.ndarray, axis: int, norm: int) -> np.ndarray:
    """Per index along ``axis``: Σ|w| (norm 1) or Σw² (norm 2) over the other axes."""
    moved = np.moveaxis(np.asarray(values, np.float64), axis, 0).reshape(values.shape[axis], -1)
    return np.abs(moved).sum(1) if norm == 1 else np.square(moved).sum(1)


def group_magnitude(cg: ChannelGraph, group: Group, norm: int) -> np.ndarray:
    total = np.zeros(group.n_units)
    for space in group.params:
        if space.tensor in cg.stats:
            continue
        per_atom = slice_norms(centred_values(cg.graph, space.tensor), space.axis, norm)  # quantized: less zero point
        total += np.bincount(group.labels[space], weights=per_atom, minlength=group.n_units)
    total = total if norm == 1 else np.sqrt(total)
    return np.where(unread_units(cg, group), 0.0, total)


def unread_units(cg: ChannelGraph, group: Group) -> np.ndarray:
    """Per unit: True when every reader of the group's channels is a constant-weight layer whose input slice for the
    unit is all zero (see the module docstring); all False when some reader is not such a layer."""
    none = np.zeros(group.n_units, bool)
    spaces = set(group.spaces)
    if any(r.space in spaces for r in cg.renormalised):
        return none
    graph, read, readers = cg.graph, none.copy(), 0
    for tensor in {s.tensor for s in spaces if not cg.graph.is_const(s.tensor)}:
        for node in graph.consumers.get(tensor, ()):
            if node.op in RECURRENT_OPS:
                return none
            if node.op not in LINEAR_OPS:
                continue
            lay = layer_of(graph, node.name)
            if lay is None or lay.x != tensor or Space(tensor, lay.ops.x_axis) not in spaces:
                return none
            if lay.groups > 1:  # depthwise: channel c in, channel c out, in this group; its readers decide
                if Space(lay.y, lay.ops.y_axis) in spaces and lay.groups == graph.shape(tensor)[lay.ops.x_axis]:
                    continue
                return none
            weight = Space(lay.weight, lay.ops.w_in)
            if weight not in group.labels:
                return none
            per_atom = slice_norms(graph.value(lay.weight), weight.axis, 1)
            read |= np.bincount(group.labels[weight], weights=per_atom, minlength=group.n_units) > 0
            readers += 1
    return ~read if readers else none


@dataclass(frozen=True, kw_only=True)
class MagnitudeScore(Pass):
    """Score every prunable group's units by weight magnitude."""

    norm: Literal[1, 2] = 1
    requires = ("channels",)
    provides = ("scores",)

    def call(self, state: PruneState) -> PassResult:
        cg = state.channels
        scores = {g.id: group_magnitude(cg, g, self.norm) for g in cg.prunable}
        return PassResult(state.with_(scores=scores), modified=False, stats={"norm": self.norm})

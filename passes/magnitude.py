"""Magnitude scoring (Li et al. 2017): a unit's score is the L1 or L2 norm of every weight slice it owns.

For a coupled unit the norms of all its *multiplicative* slices (producer filters, BN / LayerNorm scales, consumer
input columns) add up, as DepGraph does. Additive terms — a layer's bias, a BatchNorm's shift, a constant added —
are left out, as BN running statistics are: they scale no input, so their size says nothing about how much of the
signal a channel carries (a channel with a large shift and tiny filters is nearly a constant). This is also what
Torch-Pruning 1.6's ``GroupMagnitudeImportance(p=1)`` reads (weights and BN γ): measured on the digits models
(3 training seeds, ratios 0.3 / 0.5 / 0.7, the same channel counts), it now removes exactly Torch-Pruning's channels
in every layer; with the shifts counted it differed in 20–35 % of them. A group that holds only additive terms is
scored by them.

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


# inputs that are added to a node's result (not multiplied with an activation), by op
ADDITIVE_INPUTS = {"Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,), "BatchNormalization": (2,),
                   "InstanceNormalization": (2,), "LayerNormalization": (2,), "GroupNormalization": (2,),
                   "LSTM": (3,), "GRU": (3,), "RNN": (3,), "QLinearConv": (8,), "Add": (0, 1), "Sub": (0, 1)}
PASS_THROUGH = ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Concat")  # values unchanged


def additive(graph, tensor: str) -> bool:
    """Whether every use of ``tensor`` (through ops that only move its values) adds it to a result."""
    seen, todo = set(), [tensor]
    uses = 0
    while todo:
        name = todo.pop()
        for node in graph.consumers.get(name, ()):
            slots = [i for i, inp in enumerate(node.inputs) if inp == name]
            if node.op in PASS_THROUGH and slots and (node.op == "Concat" or slots == [0]):
                todo.extend(o for o in node.outputs if o not in seen)
                seen.update(node.outputs)
                continue
            if not all(i in ADDITIVE_INPUTS.get(node.op, ()) for i in slots):
                return False
            uses += 1
    return uses > 0


def group_magnitude(cg: ChannelGraph, group: Group, norm: int) -> np.ndarray:
    spaces = [s for s in group.params if s.tensor not in cg.stats]
    scaling = [s for s in spaces if not additive(cg.graph, s.tensor)]
    total = np.zeros(group.n_units)
    for space in scaling or spaces:
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

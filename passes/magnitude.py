"""Magnitude scoring (Li et al. 2017): a unit's score is the L1 or L2 norm of every weight slice it owns.

For a coupled unit the norms of all its slices (producer filters, BN scale and shift, consumer input
columns) add up, as DepGraph does; BN running statistics are not weights and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphprune.channels.analysis import ChannelGraph, Group
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
        per_atom = slice_norms(cg.graph.value(space.tensor), space.axis, norm)
        total += np.bincount(group.labels[space], weights=per_atom, minlength=group.n_units)
    return total if norm == 1 else np.sqrt(total)


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

"""Network slimming (Liu et al. 2017): a unit's score is |γ| of the BatchNormalization on its channel.

A unit covered by several BatchNormalizations (a residual stream, a concatenation) takes the mean |γ| over
those that hold it. Groups without a BatchNormalization (e.g. exporters that fold BN into the conv) fall back
to magnitude scores for that group; the stats count them and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphprune.channels.analysis import ChannelGraph, Group
from graphprune.channels.rules import Space
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult
from graphprune.passes.magnitude import group_magnitude


def bn_scales(cg: ChannelGraph) -> dict[int, list[Space]]:
    """Group id → the BatchNormalization scale spaces (``scale[0]``) in it."""
    out: dict[int, list[Space]] = {}
    for node in cg.graph.nodes:
        if node.op != "BatchNormalization" or not cg.graph.is_const(node.input(1)):
            continue
        space = Space(node.inputs[1], 0)
        if space in cg.group_of:
            out.setdefault(cg.group_of[space], []).append(space)
    return out


def group_gamma(group: Group, spaces: list[Space], cg: ChannelGraph) -> np.ndarray:
    total = np.zeros(group.n_units)
    count = np.zeros(group.n_units)
    for space in spaces:
        labels = group.labels[space]
        gamma = np.abs(np.asarray(cg.graph.value(space.tensor), np.float64))
        total += np.bincount(labels, weights=gamma, minlength=group.n_units)
        count += np.bincount(labels, minlength=group.n_units)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


@dataclass(frozen=True, kw_only=True)
class BNScaleScore(Pass):
    """Score = mean |γ| per unit; magnitude (``norm``) for groups with no BatchNormalization."""

    norm: Literal[1, 2] = 1
    requires = ("channels",)
    provides = ("scores",)

    def call(self, state: PruneState) -> PassResult:
        cg = state.channels
        scales = bn_scales(cg)
        scores, fallback = {}, []
        for group in cg.prunable:
            if group.id in scales:
                scores[group.id] = group_gamma(group, scales[group.id], cg)
            else:
                scores[group.id] = group_magnitude(cg, group, self.norm)
                fallback.append(group.id)
        notes = []
        if fallback:
            notes.append(f"bn_scale: {len(fallback)} of {len(scores)} prunable groups have no BatchNormalization "
                         f"(folded into the conv by the exporter?) and were scored by L{self.norm} magnitude")
        stats = {"groups_bn": len(scores) - len(fallback), "groups_magnitude_fallback": fallback, "notes": notes}
        return PassResult(state.with_(scores=scores), modified=False, stats=stats)

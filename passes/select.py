"""Selection: turn unit scores into a plan.

* local (default): remove the ``ratio`` lowest-scored units of every prunable group;
* global: rank all units by their score divided by their group's mean score and remove the lowest
  ``ratio`` of all units, never more than ``max_group_ratio`` of one group;
* threshold: remove every unit whose raw score is ≤ ``threshold``.

Then the kept count of each group is rounded to the nearest multiple of ``round_to`` (hardware likes aligned
channel counts), and every space keeps at least one channel, so no tensor becomes empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph, Group
from graphprune.channels.plan import Plan
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest scores (stable: ties go to the lower index)."""
    return np.argsort(scores, kind="stable")[:count]


def round_kept(n_units: int, n_remove: int, round_to: int) -> int:
    """Units to remove once the kept count is rounded to the nearest multiple of ``round_to`` (at least one
    multiple; halves round up). Groups of at most ``round_to`` units are left as they are."""
    if round_to <= 1 or n_units <= round_to:
        return n_remove
    kept = n_units - n_remove
    rounded = max(round_to, int(math.floor(kept / round_to + 0.5)) * round_to)
    return n_units - min(n_units, rounded)


def keep_one_per_space(group: Group, scores: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Give back the best unit of any space that would lose every atom."""
    removed = set(removed.tolist())
    for labels in group.labels.values():
        present = np.unique(labels)
        if all(u in removed for u in present.tolist()):
            removed.discard(int(present[np.argmax(scores[present])]))
    return np.array(sorted(removed), np.int64)


@dataclass(frozen=True, kw_only=True)
class Select(Pass):
    ratio: float = 0.5
    scope: Literal["local", "global"] = "local"
    threshold: float | None = None
    round_to: int = 1
    max_group_ratio: float = 0.9
    requires = ("channels", "scores")
    provides = ("plan",)

    def call(self, state: PruneState) -> PassResult:
        cg, scores = state.channels, state.scores
        counts = self.removal_counts(cg, scores)
        removed = {}
        for gid, count in counts.items():
            group = cg.groups[gid]
            count = round_kept(group.n_units, count, self.round_to)
            chosen = lowest(scores[gid], count)
            removed[gid] = keep_one_per_space(group, scores[gid], chosen)
        meta = {"ratio": self.ratio, "scope": self.scope, "threshold": self.threshold, "round_to": self.round_to}
        plan = Plan.from_removed(cg, removed, meta)
        stats = {"units_removed": plan.units_removed, "groups_pruned": len(plan.removed)}
        return PassResult(state.with_(plan=plan), modified=False, stats=stats)

    def removal_counts(self, cg: ChannelGraph, scores: Mapping[int, np.ndarray]) -> dict[int, int]:
        if self.threshold is not None:
            return {g: int((s <= self.threshold).sum()) for g, s in scores.items()}
        if self.scope == "local":
            return {g: int(math.floor(self.ratio * len(s) + 1e-9)) for g, s in scores.items()}
        return self.global_counts(scores)

    def global_counts(self, scores: Mapping[int, np.ndarray]) -> dict[int, int]:
        gids = list(scores)
        if not gids:
            return {}
        normalised = [scores[g] / max(float(np.mean(scores[g])), 1e-12) for g in gids]
        caps = [int(math.floor(self.max_group_ratio * len(s))) for s in normalised]
        within_rank = [np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in normalised]
        eligible = np.concatenate([r < c for r, c in zip(within_rank, caps)])
        flat = np.concatenate(normalised)
        owner = np.repeat(np.arange(len(gids)), [len(s) for s in normalised])
        total = int(math.floor(self.ratio * len(flat) + 1e-9))
        candidates = np.flatnonzero(eligible)
        chosen = candidates[np.argsort(flat[candidates], kind="stable")[:total]]
        per_group = np.bincount(owner[chosen], minlength=len(gids))
        return {g: int(n) for g, n in zip(gids, per_group)}

"""Selection: turn unit scores into a plan.

* local (default): remove the ``ratio`` lowest-scored units of every prunable group;
* global: rank all units by their score made comparable across groups (``normalizer``: divided by its group's
  mean score, or LAMP's) and remove the lowest ``ratio`` of all units, never more than ``max_group_ratio`` of one
  group;
* threshold: remove every unit whose raw score is ≤ ``threshold``, and never one scoring above it: the kept count
  is rounded *up* to a multiple of ``round_to`` (the best-scored of the units at or below T are kept back).

With ``budget="params"``, ``"macs"`` or ``"latency"`` the ratio is the fraction of the whole model's parameters
(MACs; latency predicted by the measured per-node curves of ``state.latency``, HALP-style) to remove, as for sampling: local scope removes one uniform fraction f of every group, global scope the n lowest-ranked
units, with f (n) found by bisection on the predicted cost (:class:`graphprune.methods.budget.BudgetModel`, the
rounding below included) and the side of the step nearer the target taken. A target below what every group at
its limit gives is met as closely as possible and the stats say "budget unreachable".

Then the kept count of each group is rounded to the nearest multiple of ``round_to`` (up, for a threshold) (hardware likes aligned
channel counts), and every space keeps at least one channel, so no tensor becomes empty.
"""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.methods.budget import BudgetModel, cost_of_sizes, keep_one_per_space, plan_cost, round_kept
from graphprune.errors import UsageError
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest scores (stable: ties go to the lower index)."""
    return np.argsort(scores, kind="stable")[:count]


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP (Lee et al. 2021), per unit: its score² over the sum of the score² of the units of its group that score
    at least as high (ties in the stable order), for the non-negative scores every score method gives. In [0, 1],
    monotone in the score within a group, 1 for a group's best unit. Ranked across groups it keeps about as many
    units of every group as their scores' spread allows (a group of equal scores with k units left scores 1/k),
    where dividing by the group's mean lets a group of similar scores go almost whole. It is the normalisation
    Torch-Pruning's ``LAMPImportance`` applies (there to summed squared weights)."""
    energy = np.square(np.asarray(scores, np.float64))
    order = np.argsort(energy, kind="stable")
    at_least = np.cumsum(energy[order][::-1])[::-1]  # Σ over this unit and every unit after it in the order
    out = np.empty_like(energy)
    out[order] = energy[order] / np.maximum(at_least, np.finfo(np.float64).tiny)
    return out


def normalised(scores: np.ndarray, normalizer: str) -> np.ndarray:
    """A group's scores made comparable with other groups' (``"mean"``: over their mean; ``"lamp"``: :func:`lamp`)."""
    if normalizer == "lamp":
        return lamp(scores)
    return scores / max(float(np.mean(scores)), 1e-12)


def removed_for(n_units: int, ratio: float) -> int:
    """Units to remove so that at most ``1 - ratio`` of ``n_units`` stay (the kept count rounded down, as the
    params and MACs budgets keep at most their target, and as Torch-Pruning counts): 0.3 of 16 removes 5."""
    return n_units - int(math.floor((1.0 - ratio) * n_units + 1e-9))


@dataclass(frozen=True, kw_only=True)
class Select(Pass):
    ratio: float = 0.5
    budget: Literal["channels", "params", "macs", "latency"] = "channels"
    scope: Literal["local", "global"] = "local"
    threshold: float | None = None
    round_to: int = 1
    max_group_ratio: float = 0.9
    normalizer: Literal["mean", "lamp"] = "mean"
    requires = ("channels", "scores")
    provides = ("plan",)

    def call(self, state: PruneState) -> PassResult:
        cg, scores = state.channels, state.scores
        budgeted = self.budget != "channels" and self.threshold is None
        if budgeted and self.budget == "latency" and state.latency is None:
            raise UsageError("--budget latency needs the measured latency table (the MeasureLatency pass) first")
        search = BudgetSearch(self, cg, scores, state.latency) if budgeted else None
        counts = search.counts() if search else self.removal_counts(cg, scores)
        removed = {}
        for gid, count in counts.items():
            group = cg.groups[gid]
            count = round_kept(group.n_units, count, self.round_to, up=self.threshold is not None)
            chosen = lowest(scores[gid], count)
            removed[gid] = keep_one_per_space(group, scores[gid], chosen)
        meta = {"ratio": self.ratio, "scope": self.scope, "threshold": self.threshold, "round_to": self.round_to}
        if self.scope == "global":
            meta["normalizer"] = self.normalizer
        plan = Plan.from_removed(cg, removed, meta)
        stats = {"units_removed": plan.units_removed, "groups_pruned": len(plan.removed)}
        if search:
            achieved = search.achieved(plan)
            plan = dataclasses.replace(plan, meta=MappingProxyType(dict(plan.meta, budget=self.budget, achieved=achieved)))
            stats |= {"budget": self.budget, "target_kept": 1.0 - self.ratio, "achieved_kept": achieved[self.budget],
                      "budget_error": achieved[self.budget] - (1.0 - self.ratio), "search": search.how}
        return PassResult(state.with_(plan=plan), modified=False, stats=stats)

    def removal_counts(self, cg: ChannelGraph, scores: Mapping[int, np.ndarray]) -> dict[int, int]:
        if self.threshold is not None:
            return {g: int((s <= self.threshold).sum()) for g, s in scores.items()}
        if self.scope == "local":
            return {g: removed_for(len(s), self.ratio) for g, s in scores.items()}
        return self.global_counts(scores)

    def global_counts(self, scores: Mapping[int, np.ndarray], total: int | None = None) -> dict[int, int]:
        """The ``total`` (default: ``ratio`` of all) lowest normalised scores across groups, per group."""
        gids = list(scores)
        if not gids:
            return {}
        comparable = [normalised(scores[g], self.normalizer) for g in gids]
        caps = [int(math.floor(self.max_group_ratio * len(s))) for s in comparable]
        within_rank = [np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in comparable]
        eligible = np.concatenate([r < c for r, c in zip(within_rank, caps)])
        flat = np.concatenate(comparable)
        owner = np.repeat(np.arange(len(gids)), [len(s) for s in comparable])
        total = removed_for(len(flat), self.ratio) if total is None else total
        candidates = np.flatnonzero(eligible)
        chosen = candidates[np.argsort(flat[candidates], kind="stable")[:total]]
        per_group = np.bincount(owner[chosen], minlength=len(gids))
        return {g: int(n) for g, n in zip(gids, per_group)}


class BudgetSearch:
    """Per-group removal counts that meet a params / MACs / predicted-latency budget (see the module docstring)."""

    def __init__(self, select: Select, cg: ChannelGraph, scores: Mapping[int, np.ndarray], latency=None):
        self.select, self.cg, self.scores, self.latency = select, cg, scores, latency
        self.which = {"params": 0, "macs": 1}.get(select.budget)
        orders = {g: np.argsort(s, kind="stable")[::-1] for g, s in scores.items()}  # best first: kept = a prefix
        self.model = BudgetModel(cg, orders)
        self.full = (*cost_of_sizes(cg, {}), latency.predict(cg) if latency is not None else 0.0)
        self.target = (1.0 - select.ratio) * self.full[self.index]
        self.how = ""

    @property
    def index(self) -> int:
        return 2 if self.which is None else self.which

    def cost(self, counts: Mapping[int, int]) -> float:
        s, n = self.select, {g: len(v) for g, v in self.scores.items()}
        kept = {g: n[g] - round_kept(n[g], c, s.round_to) for g, c in counts.items()}
        if self.which is None:
            return self.latency.predict(self.cg, self.model.sizes(kept))
        return self.model.cost(kept)[self.which]

    def counts(self) -> dict[int, int]:
        if self.select.ratio <= 0 or not self.scores:
            self.how = "nothing to prune"
            return {g: 0 for g in self.scores}
        at = self.local_counts if self.select.scope == "local" else self.global_counts
        lo, hi = 0.0, 1.0 if self.select.scope == "local" else float(self.eligible())
        if self.cost(at(hi)) > self.target:
            self.how = "budget unreachable: every group is at its limit"
            return at(hi)
        for _ in range(60 if self.select.scope == "local" else int(hi).bit_length() + 1):
            mid = (lo + hi) / 2 if self.select.scope == "local" else float((int(lo) + int(hi)) // 2)
            if self.cost(at(mid)) <= self.target:
                hi = mid
            else:
                lo = mid
            if self.select.scope == "global" and int(hi) - int(lo) <= 1:
                break
        best = min((lo, hi), key=lambda x: abs(self.cost(at(x)) - self.target))
        self.how = "bisection"
        return at(best)

    def local_counts(self, fraction: float) -> dict[int, int]:
        return {g: min(len(s) - 1, int(math.floor(fraction * len(s) + 1e-9))) for g, s in self.scores.items()}

    def eligible(self) -> int:
        return sum(int(math.floor(self.select.max_group_ratio * len(s))) for s in self.scores.values())

    def global_counts(self, total: float) -> dict[int, int]:
        return self.select.global_counts(self.scores, int(total))

    def achieved(self, plan: Plan) -> dict[str, float]:
        after = plan_cost(self.cg, plan)
        out = {"params": after[0] / max(self.full[0], 1), "macs": after[1] / max(self.full[1], 1)}
        if self.latency is not None:
            sizes = {s: len(k) for s, k in plan.keep.items() if not s.virtual}
            predicted = self.latency.predict(self.cg, sizes)
            out |= {"latency": predicted / max(self.full[2], 1e-12), "latency_ms": [self.full[2], predicted]}
        return out

"""PFP selection (Liebenwein et al., ICLR 2020): per-group kept counts from the sampling bound, with ONE ε
shared by all groups and found by root-finding so the pruned model meets a params or MACs budget.

For group g with unit sensitivities s (from :class:`SensitivityScore`), S_g = Σ s, p = s / S_g,
α_g = 6 log(8 (P_g + 1) κ_g / δ) (P_g, κ_g: the largest patch count and kernel size among the group's
consumers), the sample size is m_g(ε) = ceil(3 (6 + 2ε) α_g S_g / ε²) and the group keeps
k_g(ε) = ceil(Σ_u [1 − (1 − p_u)^{m_g}]) units, clipped to [1, n_g] (then rounded like :class:`Select` when
``round_to`` > 1). Small ε keeps everything with non-zero sensitivity, large ε one unit per group; the cost
is a non-increasing step function of ε, and :func:`scipy.optimize.brentq` on log10 ε finds the step where it
crosses the target ``(1 − ratio) × cost`` (the nearer side of that step is taken). Groups whose sensitivity
is concentrated keep few units, flat ones keep many.

* ``sampling="deterministic"`` (default, the paper's experiments): keep the top-k_g units by sensitivity.
* ``sampling="randomized"``: draw m_g(ε) samples from p (seeded, multinomial), keep the drawn units, and
  record the reweighting factors count / (m_g p_u) in ``plan.meta["reweight"]``; :class:`Reweight` applies
  them to the consumers' weights after the channels are removed. The budget then holds in expectation.

One deviation from the paper: a unit with zero sensitivity (its activations were always zero on the
calibration points, e.g. a dead ReLU) would never be drawn, so no ε could keep it and a budget larger than
the sensitive units could not be met. Such units get a floor of ``ZERO_FLOOR × max sensitivity`` of their
group (of every group, for a group that is all zeros) for the bound only: they are still ranked (and
removed) first, and kept only once m is so large that every sensitive unit is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Literal, Mapping

import numpy as np
from scipy.optimize import brentq

from graphprune.methods.budget import BudgetModel, cost_of_sizes, plan_cost
from graphprune.errors import UsageError
from graphprune.channels.plan import Plan
from graphprune.methods.sensitivity import DELTA, alpha, kept_of, log_misses, sample_size
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult
from graphprune.methods.budget import keep_one_per_space, round_kept
from graphprune.methods.sensitivity import group_layers

LOG_EPS_RANGE = (-30.0, 30.0)  # log10 ε: from "every sensitive unit" to "one unit per group"
MAX_DRAWS = 10 ** 12  # randomized: a sample size above this keeps every sensitive unit anyway
ZERO_FLOOR = 1e-6  # zero sensitivities count as this fraction of the group's largest one (see above)


@dataclass(frozen=True)
class GroupBound:
    """What the sampling bound needs about one group (its totals computed once: the ε search asks often)."""

    scores: np.ndarray
    alpha: float
    round_to: int = 1

    @cached_property
    def total(self) -> float:
        return float(self.scores.sum())

    @cached_property
    def p(self) -> np.ndarray:
        return self.scores / self.total if self.total > 0 else np.zeros_like(self.scores)

    @cached_property
    def log_miss(self) -> np.ndarray:
        return log_misses(self.p)

    def m(self, eps: float) -> float:
        return float(sample_size(eps, self.alpha, self.total))


class Bounds:
    """Every group's :class:`GroupBound` at once: the kept counts k_g(ε) of all groups from one sample-size and one
    ``exp`` over all groups' channels. The search asks for them some 50 times, and numpy's per-call overhead of a
    sample size and an ``exp`` per group cost more than the arithmetic (profiled on efficientnet_b0 at 64 px: 1.2 s of
    its 1.65 s ε search). Each group's sum is still ``np.sum`` over its own slice, so the counts are those of the group alone."""

    def __init__(self, bounds: Mapping[int, GroupBound]):
        self.bounds = bounds
        self.live = live = [g for g, b in bounds.items() if b.total > 0]
        self.alphas = np.array([bounds[g].alpha for g in live], np.float64)
        self.totals = np.array([bounds[g].total for g in live], np.float64)
        misses = [bounds[g].log_miss for g in live]
        self.lengths = np.array([len(m) for m in misses], np.int64)
        self.log_miss = np.concatenate(misses) if misses else np.zeros(0)
        self.ends = np.cumsum(self.lengths)

    def kept(self, eps: float) -> dict[int, int]:
        """Group → kept units at ``eps``: ceil of the expected distinct draws in m_g(ε), clipped to [1, n_g] and
        rounded; 1 for a group without sensitivity."""
        m = sample_size(eps, self.alphas, self.totals)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            miss = np.exp(np.repeat(m, self.lengths) * self.log_miss)
        drawn = 1.0 - np.nan_to_num(miss, nan=0.0)
        out = {g: 1 for g, b in self.bounds.items() if b.total <= 0}
        for g, end, length in zip(self.live, self.ends.tolist(), self.lengths.tolist()):
            b = self.bounds[g]
            n = len(b.scores)
            k = kept_of(float(np.sum(drawn[end - length:end])), n)
            out[g] = n - round_kept(n, n - k, b.round_to)
        return {g: out[g] for g in self.bounds}


def floored(scores, largest: float) -> np.ndarray:
    """``scores`` raised to ``ZERO_FLOOR`` × their group's largest, or × ``largest`` (over every group) for a
    group that is all zeros, so that it, too, can be kept when the budget asks for it (see the module doc)."""
    s = np.asarray(scores, np.float64)
    if not s.size:
        return s
    top = s.max()
    return np.maximum(s, ZERO_FLOOR * (top if top > 0 else largest))


def solve_epsilon(cost: Callable[[float], float], target: float) -> tuple[float, str]:
    """log10 ε whose cost is nearest ``target`` (cost non-increasing in ε); and how it was found."""
    lo, hi = LOG_EPS_RANGE
    f_lo, f_hi = cost(lo) - target, cost(hi) - target
    if f_lo <= 0:
        return lo, "every unit with non-zero sensitivity fits the budget"
    if f_hi > 0:
        return hi, "budget unreachable: every group is at its minimum"
    root = brentq(lambda x: cost(x) - target, lo, hi, xtol=1e-12, maxiter=500)
    candidates = [root - 1e-9, root, root + 1e-9]
    best = min(candidates, key=lambda x: abs(cost(x) - target))
    return best, "brentq"


@dataclass(frozen=True, kw_only=True)
class SamplingSelect(Pass):
    ratio: float = 0.5
    budget: Literal["params", "macs"] = "params"
    sampling: Literal["deterministic", "randomized"] = "deterministic"
    delta: float = DELTA
    round_to: int = 1
    seed: int = 0
    requires = ("channels", "scores")
    provides = ("plan",)

    def __post_init__(self) -> None:
        if self.budget not in ("params", "macs"):
            raise UsageError(f"budget '{self.budget}' must be 'params' or 'macs'")
        if self.sampling not in ("deterministic", "randomized"):
            raise UsageError(f"sampling '{self.sampling}' must be 'deterministic' or 'randomized'")

    def call(self, state: PruneState) -> PassResult:
        cg, scores = state.channels, state.scores
        which = 0 if self.budget == "params" else 1
        before = cost_of_sizes(cg, {})
        target = (1.0 - self.ratio) * before[which]
        by_group = group_layers(cg)
        largest = max((float(np.max(s)) for s in scores.values() if np.size(s)), default=0.0)
        bounds = {g: GroupBound(floored(s, largest), self.group_alpha(by_group.get(g, [])), self.round_to)
                  for g, s in scores.items()}
        orders = {g: np.argsort(-b.scores, kind="stable") for g, b in bounds.items()}
        model = BudgetModel(cg, orders)
        every = Bounds(bounds)

        def kept_at(log_eps: float) -> dict[int, int]:
            return every.kept(10.0 ** log_eps)

        costs: dict[tuple[int, ...], tuple[int, int]] = {}

        def cost_at(log_eps: float) -> int:
            """The cost is a step function of ε: once the search brackets one step, its ends repeat kept counts."""
            kept = kept_at(log_eps)
            key = tuple(kept.values())
            if key not in costs:
                costs[key] = model.cost(kept)
            return costs[key][which]

        if self.ratio <= 0 or not bounds:
            log_eps, how = LOG_EPS_RANGE[0], "nothing to prune"
            kept = {g: len(b.scores) for g, b in bounds.items()}
        else:
            log_eps, how = solve_epsilon(cost_at, target)
            kept = kept_at(log_eps)
        eps = 10.0 ** log_eps
        reweight = {}
        if self.sampling == "randomized" and self.ratio > 0:
            removed, reweight = self.draw(bounds, eps)
        else:
            removed = {g: orders[g][kept[g]:] for g in bounds}
        removed = {g: keep_one_per_space(cg.groups[g], bounds[g].scores, np.asarray(r, np.int64))
                   for g, r in removed.items()}
        after = (plan_cost(cg, Plan.from_removed(cg, removed)) if removed else before)
        achieved = after[which] / max(before[which], 1)
        meta = {"method": "sampling", "epsilon": eps, "delta": self.delta, "budget": self.budget,
                "ratio": self.ratio, "sampling": self.sampling, "kept": {str(g): int(bounds[g].scores.size - len(r))
                                                                        for g, r in removed.items()},
                "achieved": {"params": after[0] / max(before[0], 1), "macs": after[1] / max(before[1], 1)}}
        if reweight:
            meta["reweight"] = {str(g): f.tolist() for g, f in reweight.items()}
        plan = Plan.from_removed(cg, removed, meta)
        stats = {"epsilon": eps, "delta": self.delta, "search": how, "budget": self.budget,
                 "target_kept": 1.0 - self.ratio, "achieved_kept": achieved,
                 "budget_error": achieved - (1.0 - self.ratio), "sampling": self.sampling,
                 "kept_per_group": {str(g): [int(bounds[g].scores.size - len(removed[g])), int(bounds[g].scores.size)]
                                    for g in bounds},
                 "sample_size": {str(g): b.m(eps) for g, b in bounds.items()},
                 "units_removed": plan.units_removed}
        kept_text = ", ".join(f"{k}/{n}" for k, n in stats["kept_per_group"].values())
        notes = [f"sampling ({self.sampling}): ε = {eps:.4g} shared by all groups, δ = {self.delta:g}; kept "
                 f"{achieved:.1%} of the {self.budget} (target {1 - self.ratio:.1%}); channels kept per group: {kept_text}"]
        if how.startswith("budget unreachable"):
            notes.append(f"sampling: the {self.budget} budget {1 - self.ratio:.1%} is unreachable; pruned to the "
                         f"minimum ({achieved:.1%})")
        stats["notes"] = notes
        return PassResult(state.with_(plan=plan), modified=False, stats=stats)

    def group_alpha(self, layers) -> float:
        patches = max((lay.patches for lay in layers), default=1)
        kappa = max((lay.kappa for lay in layers), default=1)
        return alpha(patches, kappa, self.delta)

    def draw(self, bounds: dict[int, GroupBound], eps: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Randomized PFP: m draws per group; keep the drawn units, factors count / (m p)."""
        rng = np.random.default_rng(self.seed)
        removed, factors = {}, {}
        for g, b in bounds.items():
            if b.total <= 0:
                removed[g] = np.arange(1, len(b.scores))
                continue
            m = b.m(eps)
            m = MAX_DRAWS if not math.isfinite(m) or m > MAX_DRAWS else int(m)
            p = b.p / b.p.sum()
            counts = rng.multinomial(m, p)
            kept = counts > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                factors[g] = np.where(kept, counts / (m * p), 1.0)
            removed[g] = np.flatnonzero(~kept)
        return removed, factors

"""Iterative pruning: prune a fraction, fine-tune, repeat, the learning-rate schedule restarted each round.

One-shot removal of a large fraction loses function that fine-tuning only partly recovers. Removing it in
``steps`` rounds, each followed by fine-tuning from the full learning rate again (learning-rate rewinding, as in
Renda et al. 2020 and "Back to Basics: Efficient Network Compression via IMP", Zimmer et al. 2023), lets each
round start from a network that has re-learned what the last one took. Round ``k`` of ``K`` aims at a kept
fraction ``(1 - ratio)^(k/K)`` of the original's budget (params, MACs, or each group's channels), a geometric
schedule: every round removes the same share of what is left. Each round's ratio is taken against the model as
it is now, so the last round lands on the one-shot target (the channel budget aside, which compounds per group).

Every round is a normal :func:`graphprune.prune` of the current module: verified against its masked original,
with the report's figures; :class:`RoundRecord` keeps each round's size and, when given, its evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from torch import nn

from graphprune import api
from graphprune.errors import UsageError
from graphprune.torch.finetune import finetune

BUDGET_MEASURES = ("params", "macs")


@dataclass(frozen=True)
class RoundRecord:
    """One round: the ratio asked of the model as it was, its params and MACs after, and ``evaluation`` (the
    caller's ``eval_fn`` after pruning and after fine-tuning)."""

    round: int
    step_ratio: float
    params: int
    macs: int
    pruned: Any = None
    finetuned: Any = None


@dataclass(frozen=True)
class IterativeResult:
    model: nn.Module
    rounds: tuple[RoundRecord, ...]


def kept_targets(ratio: float, steps: int) -> list[float]:
    """The kept fraction of the original after each of ``steps`` rounds: ``(1 - ratio)^(k / steps)``."""
    if not 0.0 <= ratio < 1.0:
        raise UsageError(f"ratio {ratio} is out of range; it must be in [0, 1)")
    if int(steps) != steps or steps < 1:
        raise UsageError(f"steps {steps} must be a positive integer")
    return [(1.0 - ratio) ** (k / steps) for k in range(1, steps + 1)]


def step_ratio(target_kept: float, current: float, original: float) -> float:
    """The ratio to ask of the current model so that it keeps ``target_kept`` of ``original``."""
    return min(max(1.0 - target_kept * original / max(current, 1.0), 0.0), 0.99)


def iterative_prune(model: nn.Module, loader: Iterable, example_inputs: tuple, *, ratio: float, steps: int,
                    epochs: int, lr: float, method: str = "magnitude", budget: str | None = None,
                    eval_fn: Callable[[nn.Module], Any] | None = None, loss_fn: Callable | None = None,
                    progress: bool = False, **options: Any) -> IterativeResult:
    """``steps`` rounds of (prune to the round's target, fine-tune ``epochs`` epochs with a cosine schedule
    restarted from ``lr``); ``options`` go to every :func:`graphprune.prune` (``round_to``, ``exclude`` …).
    ``steps=1`` is one-shot pruning then fine-tuning."""
    measure = budget or "params"
    if measure not in (*BUDGET_MEASURES, "channels"):
        raise UsageError(f"budget '{measure}' must be one of params, macs, channels")
    targets = kept_targets(ratio, steps)
    current, rounds = model, []
    original = now = None
    if measure != "channels":
        original = now = float(getattr(api.inspect(model, example_inputs=example_inputs).cost, measure))
    for k, target in enumerate(targets, start=1):
        # channels: each group loses the same per-round share of what it has, (1 - ratio)^(1/K) kept per round
        asked = 1.0 - (1.0 - ratio) ** (1.0 / steps) if measure == "channels" else step_ratio(target, now, original)
        result = api.prune(current, example_inputs=example_inputs, method=method, ratio=asked, budget=measure,
                           **options)
        after = result.report.after
        now = float(getattr(after, measure)) if measure != "channels" else None
        pruned_eval = eval_fn(result.model) if eval_fn is not None else None
        current = finetune(result.model, loader, epochs=epochs, lr=lr, loss_fn=loss_fn, progress=progress).model
        rounds.append(RoundRecord(k, asked, int(after.params), int(after.macs), pruned_eval,
                                  eval_fn(current) if eval_fn is not None else None))
    return IterativeResult(current, tuple(rounds))

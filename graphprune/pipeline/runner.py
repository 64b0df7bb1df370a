"""The one pipeline runner: every pruning run (``prune``, ``plan``, the torch path, ``--verify each``) goes through
:meth:`Pipeline.run`, and its verification through :meth:`Pipeline.verify`.

``run`` checks up front that every pass can run on the source's frontend kind, then runs the passes in order
under their contract (:func:`graphprune.pipeline.base.step`), times them and records their history. Each pass
that changed the model is a :class:`Stage` with its claim. With ``each=True`` a stage is checked against its
claim as soon as it ran (the run stops at the first failure).

``verify`` checks every stage against its own oracle (the frontend's, for that claim), reusing the checks ``each``
already made: the channel stage against the masked original, low rank against the truncated original, a weight
edit against the input with the same edit, a value-preserving rewrite against its input. One stage gives its own
verification; several are combined (checks named ``Stage/check``, the channel stage's bare) with the drift of the
final model against the unpruned original. A run that changed nothing is checked as :class:`Unchanged`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from graphprune import progress
from graphprune.errors import VerificationError
from graphprune.pipeline.base import Pass, refuse_unsupported, step
from graphprune.pipeline.state import PruneState
from graphprune.verify.claims import Claim, MaskedOriginal, Unchanged
from graphprune.verify.result import Tolerance, Verification, combine


@dataclass(frozen=True, eq=False)
class Stage:
    """A pass that changed the model: its name, its claim, and the models before and after it."""

    name: str
    claim: Claim
    before: Any
    after: Any

    @property
    def label(self) -> str:
        """How its checks are prefixed when a run has several stages (the channel stage: none)."""
        return "" if isinstance(self.claim, MaskedOriginal) else self.name


@dataclass(frozen=True, eq=False)
class Run:
    """The final state, the stages in order, and the checks already made during the run (by stage index)."""

    state: PruneState
    stages: tuple[Stage, ...] = ()
    checked: Mapping[int, Verification] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        return bool(self.stages)


def require(v: Verification) -> Verification:
    """``v``, or a :class:`VerificationError` saying what failed."""
    if not v.ok:
        raise VerificationError(f"verification failed: {v.failure}; nothing written")
    return v


class Pipeline:
    """An explicit list of passes. ``tolerance``: how stages are checked; ``each``: check each stage as it runs."""

    def __init__(self, passes: Sequence[Pass], *, tolerance: Tolerance = Tolerance(), each: bool = False):
        self.passes = tuple(passes)
        self.tolerance = tolerance
        self.each = each

    def run(self, state: PruneState) -> Run:
        for p in self.passes:
            refuse_unsupported(p, state.frontend.kind)
        stages: list[Stage] = []
        checked: dict[int, Verification] = {}
        for i, p in enumerate(self.passes):
            with progress.task(f"[{i + 1}/{len(self.passes)}] {p.name}"):
                done = step(p, state)
            state = done.state
            if done.claim is None:
                continue
            stages.append(Stage(p.name, done.claim, done.before.model, state.model))
            if self.each:
                with progress.task(f"verifying {p.name}"):
                    checked[len(stages) - 1] = require(self.check(state, stages[-1]))
        return Run(state, tuple(stages), checked)

    def check(self, state: PruneState, stage: Stage) -> Verification:
        return state.frontend.check(stage.claim, state.source, stage.before, stage.after, self.tolerance)

    def verify(self, run: Run) -> Verification:
        """Every stage against its oracle (see the module docstring); never raises for a failed check."""
        state = run.state
        if not run.stages:
            return state.frontend.check(Unchanged(), state.source, state.source.model, state.model, self.tolerance)
        results = [(stage.label, run.checked.get(i) or self.check(state, stage)) for i, stage in enumerate(run.stages)]
        return combine(results, lambda: state.frontend.drift(state.source, state.model, self.tolerance))

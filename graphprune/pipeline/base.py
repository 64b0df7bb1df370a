"""The pass contract. A pass is a frozen dataclass whose fields are its options; ``call(state) -> PassResult``.

It declares, as class attributes, what it needs and what it gives, and a pass that may change the model says
what its output must then equal (:meth:`Pass.claim`, a :mod:`graphprune.verify.claims` record). The runner
(:mod:`graphprune.pipeline.runner`) enforces all of it: a pass that lies about ``modified``, forgets what it
promised, changes the model without being declared ``mutates``, or writes an invalid model is a
:class:`PassContractError`; its claim is checked by the frontend's oracle.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from graphprune.errors import InternalError, UsageError
from graphprune.pipeline.state import PassRecord, PruneState
from graphprune.verify.claims import Claim, Unchanged

FRONTEND_KINDS = frozenset({"onnx", "torch"})  # what ``state.model`` is: an onnx.ModelProto, or an nn.Module


class PassContractError(InternalError):
    """A pass broke its declared contract: a bug in that pass."""


@dataclass(frozen=True)
class PassResult:
    state: PruneState
    modified: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Pass(abc.ABC):
    """``requires`` / ``provides``: state fields read / set. ``mutates``: may replace the model (and then must
    override :meth:`claim`). ``runs_on``: the frontend kinds whose models it can read or rewrite; ``refusal``:
    what to tell a user whose model it cannot run on (default: a pointer to the other frontend)."""

    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    mutates: ClassVar[bool] = False
    runs_on: ClassVar[frozenset[str]] = FRONTEND_KINDS
    refusal: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.mutates and cls.claim is Pass.claim:
            raise TypeError(f"{cls.__name__} mutates the model, so it must say what its output equals (claim)")
        if not cls.runs_on <= FRONTEND_KINDS:
            raise TypeError(f"{cls.__name__}.runs_on names unknown frontend kinds {set(cls.runs_on - FRONTEND_KINDS)}")

    @abc.abstractmethod
    def call(self, state: PruneState) -> PassResult:
        """Read ``state`` and return a new one (never mutate it); ``modified`` says whether the model changed."""

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        """What ``after.model`` equals, for the oracle to check; called only when the pass changed the model."""
        return Unchanged()

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, state: PruneState) -> PruneState:
        """Run this one pass under its contract (:func:`step`), without verification."""
        return step(self, state).state


@dataclass(frozen=True, eq=False)
class Step:
    """One pass run under its contract: the state after it (its record appended to the history), and, when it
    changed the model, the state before and its claim."""

    state: PruneState
    record: PassRecord
    before: PruneState
    claim: Claim | None


OTHER_PATH = {"torch": "export the module to ONNX and prune the .onnx file",
              "onnx": "pass the torch module instead (graphprune.prune(module, example_inputs=...))"}


def refuse_unsupported(p: Pass, kind: str) -> None:
    """A :class:`UsageError` when ``p`` cannot run on a model of frontend kind ``kind``."""
    if kind not in p.runs_on:
        why = p.refusal or OTHER_PATH.get(kind, "")
        raise UsageError(f"pass {p.name} runs on {' and '.join(sorted(p.runs_on))} models only, not on this {kind} "
                         f"model; {why}")


def step(p: Pass, state: PruneState) -> Step:
    """Run ``p`` on ``state`` and enforce its contract (see the module docstring); the frontend of the state's
    source judges whether a changed model is structurally valid."""
    frontend = state.frontend
    refuse_unsupported(p, frontend.kind)
    missing = [f for f in p.requires if getattr(state, f) is None]
    if missing:
        raise PassContractError(f"{p.name} needs {missing}; run the passes that provide them first")
    t0 = time.perf_counter()
    result = p.call(state)
    seconds = time.perf_counter() - t0
    out = result.state
    absent = [f for f in p.provides if getattr(out, f) is None]
    if absent:
        raise PassContractError(f"{p.name} promised {absent} but did not set them")
    replaced = out.model is not state.model
    if replaced != result.modified:
        raise PassContractError(f"{p.name} reported modified={result.modified}, but it "
                                f"{'did' if replaced else 'did not'} replace the model")
    if replaced and not p.mutates:
        raise PassContractError(f"{p.name} replaced the model, but it is not declared to (mutates=False)")
    if replaced:
        problem = frontend.structure_problem(out.model)
        if problem:
            raise PassContractError(f"{p.name} produced an invalid model: {problem}")
    record = PassRecord(p.name, seconds, result.modified, dict(result.stats))
    after = out.with_(history=out.history + (record,))
    return Step(after, record, state, p.claim(state, after) if replaced else None)

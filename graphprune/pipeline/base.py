"""The pass contract: a frozen dataclass whose fields are its options, ``call(state) -> PassResult``.

``__call__`` checks what the pass ``requires`` is present, runs it, checks what it ``provides`` is present,
catches a pass that changes the model while reporting ``modified=False`` (or the reverse), times it, and
runs the cheap structural ONNX check after every pass that changed the model.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import onnx

from graphprune.errors import InternalError
from graphprune.runtime import check_model, runnable
from graphprune.pipeline.state import PassRecord, PruneState


class PassContractError(InternalError):
    """A pass broke its declared contract: a bug in that pass."""


@dataclass(frozen=True)
class PassResult:
    state: PruneState
    modified: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Pass(abc.ABC):
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    value_preserving: ClassVar[bool] = False  # a rewrite whose output equals its input (within tolerance)

    @abc.abstractmethod
    def call(self, state: PruneState) -> PassResult:
        """Read ``state`` and return a new one (never mutate it); ``modified`` says whether the model changed."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, state: PruneState) -> PruneState:
        missing = [f for f in self.requires if getattr(state, f) is None]
        if missing:
            raise PassContractError(f"{self.name} needs {missing}; run the passes that provide them first")
        t0 = time.perf_counter()
        result = self.call(state)
        seconds = time.perf_counter() - t0
        out = result.state
        absent = [f for f in self.provides if getattr(out, f) is None]
        if absent:
            raise PassContractError(f"{self.name} promised {absent} but did not set them")
        if (out.model is not state.model) != result.modified:
            raise PassContractError(f"{self.name} reported modified={result.modified}, but it "
                                    f"{'did' if out.model is not state.model else 'did not'} replace the model")
        if result.modified:
            try:
                with runnable(out.model) as checkable:  # a large model from a file: no serialised copy
                    check_model(checkable)
            except onnx.checker.ValidationError as exc:
                raise PassContractError(f"{self.name} produced an invalid model: {str(exc).splitlines()[0]}") from exc
        record = PassRecord(self.name, seconds, result.modified, dict(result.stats))
        return out.with_(history=out.history + (record,))

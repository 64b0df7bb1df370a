"""Coupled-channel removal: apply the plan to the model through the source's frontend (the ONNX emitter, or the
torch module resizer). Its claim: the output equals the original with the removed units masked."""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify.claims import Claim, MaskedOriginal


@dataclass(frozen=True, kw_only=True)
class RemoveChannels(Pass):
    """Records the emitter's notes, and the nodes it asks to exclude and plan again (``replan``: the torch frontend
    with ``baked="freeze"``)."""

    requires = ("plan",)
    mutates = True

    def call(self, state: PruneState) -> PassResult:
        plan = state.plan
        if plan.empty:
            return PassResult(state, modified=False, stats={"units_removed": 0})
        emitted = state.frontend.emit(state.source, state.model, plan)
        stats = {"units_removed": plan.units_removed, "notes": list(emitted.notes), "replan": list(emitted.replan)}
        return PassResult(state.with_(model=emitted.model), modified=True, stats=stats)

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        return MaskedOriginal(after.plan)

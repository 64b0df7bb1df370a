"""Coupled-channel removal: apply the plan to the model (the ONNX emitter does the surgery)."""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.emit.onnx import emit
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


@dataclass(frozen=True, kw_only=True)
class RemoveChannels(Pass):
    requires = ("plan",)

    def call(self, state: PruneState) -> PassResult:
        plan = state.plan
        if plan.empty:
            return PassResult(state, modified=False, stats={"units_removed": 0})
        model = emit(state.model, state.source.graph, plan)
        return PassResult(state.with_(model=model), modified=True, stats={"units_removed": plan.units_removed})

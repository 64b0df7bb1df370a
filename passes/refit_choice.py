"""Re-choose which units of each group go, for the refit that follows (``--reconstruct``; structured OBS,
:mod:`graphprune.methods.refit_choice`).

It runs between the selection and :class:`RemoveChannels`: every group keeps as many units as the selection
chose, so the budget and its allocation stay the method's, and only *which* units go changes, to those whose
loss the kept channels rebuild best. The model is not touched; the plan it leaves is verified like any other.
Not run with ``--threshold`` (a threshold promises that no unit scoring above it goes).
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.methods.reconstruct import RECONSTRUCT_POINTS
from graphprune.methods.refit_choice import refit_choice
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState


@dataclass(frozen=True, kw_only=True)
class RefitChoice(Pass):
    """``max_points``: the calibration points read at most (the refit's); ``seed``: the patches drawn per point."""

    max_points: int = RECONSTRUCT_POINTS
    seed: int = 0
    requires = ("channels", "plan", "calib")
    provides = ("plan",)
    runs_on = frozenset({"onnx", "torch"})

    def call(self, state: PruneState) -> PassResult:
        if state.plan.empty:
            return PassResult(state, modified=False, stats={"groups_chosen": 0})
        source = state.source
        calib = state.calib.head(self.max_points)
        plan, stats = refit_choice(state.channels, state.plan, source.model, calib, source.input_shapes, seed=self.seed,
                                   access=state.frontend.access(source))
        return PassResult(state.with_(plan=plan), modified=False, stats=stats)

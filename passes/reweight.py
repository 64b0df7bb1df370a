"""Randomized PFP reweighting: scale each kept channel's slice of its consumers' weights by count / (m p).

It runs *after* :class:`RemoveChannels`, on the pruned model, so verification stays two independent oracles:
the channel stage is checked against the masked original as for every channel method (the surgery does not
care how the kept channels were chosen), and this pass against the pruned model with exactly those weight
slices scaled, built as ``Mul`` nodes in the graph (:mod:`graphprune.verify.edits`). Scaling a
consumer's input slice commutes with masking, so together they equal "the masked, rescaled original",
while a bug in either step is reported by the stage that has it.

Only dense consumers are scaled: in a grouped (depthwise) conv an input channel feeds its own group only,
so there is no sum over sampled channels to keep unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.methods.edits import apply_to_values, reweight_edits
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify.claims import Claim, EditedWeights


@dataclass(frozen=True, kw_only=True)
class Reweight(Pass):
    requires = ("channels", "plan")
    mutates = True
    runs_on = frozenset({"onnx"})

    def call(self, state: PruneState) -> PassResult:
        factors = state.plan.meta.get("reweight", {})
        if not factors:
            return PassResult(state, modified=False, stats={"scaled_weights": 0})
        edits, skipped = reweight_edits(state.channels, state.plan)
        model = apply_to_values(state.model, edits)
        stats = {"scaled_weights": len(edits), "unscaled_consumers": skipped,
                 "factor_range": [float(min(np.min(f) for f in factors.values())),
                                  float(max(np.max(f) for f in factors.values()))]}
        return PassResult(state.with_(model=model, weight_edits=edits), modified=True, stats=stats)

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        """``after`` equals ``before`` with the recorded weight slices scaled."""
        return EditedWeights(after.weight_edits or {})

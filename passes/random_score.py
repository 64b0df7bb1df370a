"""Random scores: the baseline every criterion must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


@dataclass(frozen=True, kw_only=True)
class RandomScore(Pass):
    seed: int = 0
    requires = ("channels",)
    provides = ("scores",)

    def call(self, state: PruneState) -> PassResult:
        rng = np.random.default_rng(self.seed)
        scores = {g.id: rng.random(g.n_units) for g in state.channels.prunable}
        return PassResult(state.with_(scores=scores), modified=False, stats={"seed": self.seed})

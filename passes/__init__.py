"""Passes over a :class:`graphprune.state.PruneState`, one per file; imported as ``graphprune.passes``.

Scoring passes attach unit scores, selection turns scores into a plan, removal applies the plan.
"""

from graphprune.passes.analyse import AnalyseChannels
from graphprune.pipeline.base import Pass, PassContractError, PassResult
from graphprune.passes.fold import FoldBatchNorm
from graphprune.passes.magnitude import MagnitudeScore
from graphprune.passes.random_score import RandomScore
from graphprune.passes.remove import RemoveChannels
from graphprune.passes.select import Select

__all__ = ["AnalyseChannels", "FoldBatchNorm", "MagnitudeScore", "Pass", "PassContractError", "PassResult", "RandomScore",
           "RemoveChannels", "Select"]

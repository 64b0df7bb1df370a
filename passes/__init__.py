"""Passes over a :class:`graphprune.state.PruneState`, one per file; imported as ``graphprune.passes``.

Scoring passes attach unit scores, selection turns scores into a plan, removal applies the plan.
"""

from .analyse import AnalyseChannels
from .base import Pass, PassContractError, PassResult
from .fold import FoldBatchNorm
from .magnitude import MagnitudeScore
from .random_score import RandomScore
from .remove import RemoveChannels
from .select import Select

__all__ = ["AnalyseChannels", "FoldBatchNorm", "MagnitudeScore", "Pass", "PassContractError", "PassResult", "RandomScore",
           "RemoveChannels", "Select"]

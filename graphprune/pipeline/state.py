"""The pruning state that passes read and return (never mutate): source, analysis, scores, plan, result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnx

from graphprune.channels.analysis import ChannelGraph
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.channels.plan import Plan

if TYPE_CHECKING:  # the torch frontend imports torch; the ONNX path must not
    from graphprune.frontends.fx.trace import TorchSource


@dataclass(frozen=True)
class PassRecord:
    name: str
    seconds: float
    modified: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PruneState:
    """Everything a pipeline knows so far. ``model`` is the current ONNX model (the folded source until a
    mutating pass replaces it). With a torch source (:class:`graphprune.frontends.fx.TorchSource`, same
    ``graph`` attribute) ``model`` is the ``nn.Module`` and only non-mutating passes run on the state."""

    source: LoadedModel | TorchSource
    model: onnx.ModelProto | Any
    channels: ChannelGraph | None = None
    scores: Mapping[int, np.ndarray] | None = None
    plan: Plan | None = None
    history: tuple[PassRecord, ...] = ()
    calib: Any = None  # graphprune.calib.Calibration: the points data-informed passes read (Calibrate sets it)
    weight_edits: Mapping[str, Any] | None = None  # initializer → graphprune.edits.WeightEdit of the last value-only pass

    @staticmethod
    def start(source: LoadedModel | TorchSource) -> "PruneState":
        return PruneState(source=source, model=source.model)

    def with_(self, **changes: Any) -> "PruneState":
        return replace(self, **changes)

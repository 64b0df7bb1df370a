"""The pruning state that passes read and return (never mutate): source, analysis, scores, plan, result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import onnx

from .channels import ChannelGraph
from .frontends.onnx import LoadedModel
from .plan import Plan


@dataclass(frozen=True)
class PassRecord:
    name: str
    seconds: float
    modified: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PruneState:
    """Everything a pipeline knows so far. ``model`` is the current ONNX model (the folded source until a
    mutating pass replaces it)."""

    source: LoadedModel
    model: onnx.ModelProto
    channels: ChannelGraph | None = None
    scores: Mapping[int, np.ndarray] | None = None
    plan: Plan | None = None
    history: tuple[PassRecord, ...] = ()

    @staticmethod
    def start(source: LoadedModel) -> "PruneState":
        return PruneState(source=source, model=source.model)

    def with_(self, **changes: Any) -> "PruneState":
        return replace(self, **changes)

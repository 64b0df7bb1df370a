"""The pruning state that passes read and return (never mutate): source, analysis, scores, plan, result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.errors import UsageError


@dataclass(frozen=True)
class PassRecord:
    name: str
    seconds: float
    modified: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PruneState:
    """Everything a pipeline knows so far. ``source`` is what a frontend loaded (an ONNX
    :class:`~graphprune.frontends.onnx.load.LoadedModel` or a torch
    :class:`~graphprune.frontends.fx.trace.TorchSource`: its ``graph`` is the IR, its ``frontend`` says how to emit
    into and verify that kind of model). ``model`` is the current model: the source's until a mutating pass
    replaces it (an ``onnx.ModelProto``, or an ``nn.Module``)."""

    source: Any
    model: Any
    channels: ChannelGraph | None = None
    scores: Mapping[int, np.ndarray] | None = None
    plan: Plan | None = None
    history: tuple[PassRecord, ...] = ()
    calib: Any = None  # graphprune.methods.calib.Calibration: the points data-informed passes read (Calibrate sets it)
    weight_edits: Mapping[str, Any] | None = None  # initializer → WeightEdit of the last value-only pass
    refitted: tuple[str, ...] = ()  # initializers whose values reconstruction replaced (Reconstruct sets it)
    latency: Any = None  # graphprune.methods.latency.LatencyTable: measured per-node cost curves (MeasureLatency)
    captured: tuple[Any, Any] | None = None  # (a model, its IR Graph) for its structure (shapes, parameter counts;
    # a torch capture's constants may predate a value-only edit): handed on by a pass that has it anyway
    # (Reconstruct), so the report's cost does not capture the model again (torch.export of a small Llama: ~9 s)

    @staticmethod
    def start(source: Any) -> "PruneState":
        if getattr(source, "frontend", None) is None:
            raise UsageError("this source was not loaded by a frontend; load the model with graphprune.api.load "
                             "(ONNX) or graphprune.frontends.fx.frontend.load (torch)")
        return PruneState(source=source, model=source.model)

    @property
    def frontend(self) -> Any:
        """The :class:`graphprune.frontends.base.Frontend` of the source."""
        return self.source.frontend

    @property
    def model_graph(self) -> Any:
        """The IR of ``model`` when a pass handed it on (:attr:`captured`), else None; only while ``model`` is
        the very model it was taken from, so a later pass that replaces the model cannot leave a stale graph."""
        return self.captured[1] if self.captured is not None and self.captured[0] is self.model else None

    def with_(self, **changes: Any) -> "PruneState":
        return replace(self, **changes)

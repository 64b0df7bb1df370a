"""The frontend interface: what the API needs from each kind of source model, and nothing else.

A frontend loads a model and lowers it to the IR (``load``: a source record whose ``graph`` is the IR and whose
``frontend`` is this object), applies a plan to it (``emit``: the channel surgery, called by the
``RemoveChannels`` pass), checks a pass's claim on it (``check``: the oracles of :mod:`graphprune.verify` for that
kind of model), and measures it for the report. :func:`graphprune.api.prune` drives every frontend the same
way; a new frontend implements this class and is listed in :mod:`graphprune.frontends.registry`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from graphprune.errors import UsageError
from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.ir import Graph
from graphprune.methods.cost import Cost
from graphprune.verify.claims import Claim
from graphprune.verify.result import Drift, Tolerance, Verification


@dataclass(frozen=True, eq=False)
class Emitted:
    """A model with a plan applied; ``notes`` for the report; ``replan``: nodes to exclude and plan again (the
    torch frontend with ``baked="freeze"``, where literal channel counts in ``forward`` would need a rewrite)."""

    model: Any
    notes: tuple[str, ...] = ()
    replan: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Finished:
    """The model to hand back after verification, the report lines about it, and extra report fields."""

    model: Any
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] | None = None


class Frontend(abc.ABC):
    """``name``: what the report calls it (``"onnx"``, ``"torch.fx"``); ``kind``: what ``state.model`` is for the
    passes (``"onnx"``: an ``onnx.ModelProto``, ``"torch"``: an ``nn.Module``)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    layer_table: ClassVar[bool] = True  # the report lists each weighted layer before / after (needs graph_after)

    @abc.abstractmethod
    def accepts(self, model: Any) -> bool:
        """Whether ``model`` is this frontend's kind of source."""

    @abc.abstractmethod
    def load(self, model: Any, *, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
             example_inputs: Any = None) -> Any:
        """The source record (its ``graph`` the IR, its ``frontend`` this object); raises a typed error on bad input."""

    @abc.abstractmethod
    def emit(self, source: Any, model: Any, plan: Plan) -> Emitted:
        """``model`` (the source's) with ``plan`` applied."""

    @abc.abstractmethod
    def check(self, claim: Claim, source: Any, before: Any, after: Any, tolerance: Tolerance) -> Verification:
        """Whether ``after`` is what ``claim`` says ``before`` became; never raises for a failed check."""

    def structure_problem(self, model: Any) -> str | None:
        """A cheap structural check of a model a pass just produced: what is wrong, or None."""
        return None

    @abc.abstractmethod
    def drift(self, source: Any, model: Any, tolerance: Tolerance) -> Drift:
        """``model``'s outputs against the unpruned original's on the seeded inputs."""

    @abc.abstractmethod
    def cost(self, source: Any, model: Any, graph: Graph | None = None) -> Cost:
        """Parameters and MACs of ``model`` (the source's or a pruned one) at the analysed shapes; ``graph``: its IR
        when the caller has it (nothing is captured again)."""

    def access(self, source: Any) -> Any:
        """What the data-informed passes read models through (the protocol of
        :class:`graphprune.methods.calib.OnnxAccess`: IR, activations on calibration batches, new values, outputs)."""
        raise UsageError(f"calibration runs on ONNX and torch models, not on {self.name} ones")

    def graph_after(self, source: Any, model: Any) -> Graph | None:
        """The IR of a changed model, for the per-layer report."""
        return None

    @abc.abstractmethod
    def latency(self, source: Any, before: Any, after: Any, seed: int, threads: int = 0) -> dict[str, Any]:
        """Median latency (ms) of both models (``before_ms``, ``after_ms``, and details where measured), with
        ``threads`` intra-op threads where the runtime takes a count (0: its default)."""

    def latency_table(self, source: Any, channels: ChannelGraph, *, threads: int, round_to: int,
                      cache: bool) -> tuple[Any, bool]:
        """The model's measured per-node latency curves (a :class:`graphprune.methods.latency.LatencyTable`) and
        whether they came from the cache."""
        raise UsageError(f"--budget latency measures layers in onnxruntime, on ONNX models, not on {self.name} ones")

    def accuracy(self, source: Any, before: Any, after: Any, data: Any) -> dict[str, Any]:
        """Top-1 accuracy of both models on labelled ``data`` (``before``, ``after``, ``points``)."""
        raise UsageError(f"--eval: accuracy on labelled data is measured on ONNX models, not on {self.name} ones; "
                         "evaluate the pruned module in your own loop")

    @abc.abstractmethod
    def finish(self, source: Any, run: Any, verification: Verification | None, config: Any) -> Finished:
        """The model to return once the run is verified (metadata, dynamic dimensions, a copy of the user's module)."""

    @abc.abstractmethod
    def result(self, finished: Finished, run: Any, report: Any, channels: ChannelGraph | None) -> Any:
        """The result object the API returns (with ``model``, ``plan``, ``report``, ``channels``, ``source``, ``save``)."""

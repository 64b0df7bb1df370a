"""The Python API. The CLI calls exactly these functions.

    result = graphprune.prune("model.onnx", method="magnitude", ratio=0.5)
    result.save("small.onnx")
    print(result.report)

Every model goes the same way, whatever its frontend (:mod:`graphprune.frontends.registry` picks it):

    frontend.load ─▶ Pipeline(presets.passes(config)).run ─▶ Pipeline.verify ─▶ frontend.finish ─▶ make_report
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from graphprune import progress
from graphprune.channels.analysis import ChannelGraph, analyse
from graphprune.channels.plan import Plan
from graphprune.config import PruneConfig
from graphprune.errors import NothingRemovedError
from graphprune.frontends.base import Frontend
from graphprune.frontends.onnx.frontend import ONNX, PruneResult
from graphprune.frontends.onnx.load import LoadedModel, read_model
from graphprune.frontends.registry import frontend_for
from graphprune.methods.cost import Cost
from graphprune.pipeline import presets
from graphprune.pipeline.runner import Pipeline, Run, require
from graphprune.pipeline.state import PruneState
from graphprune.report.data import make_report, run_cost
from graphprune.verify import metadata
from graphprune.verify.result import Tolerance, Verification
from graphprune.verify.stored import verify_recorded

ModelSource = str | os.PathLike | onnx.ModelProto
__all__ = ["Inspection", "PruneResult", "inspect", "load", "plan", "prune", "run", "verify_files"]


@dataclass(frozen=True, eq=False)
class Inspection:
    channels: ChannelGraph
    cost: Cost
    source: Any


def load(model: ModelSource, input_shapes=None) -> LoadedModel:
    """Load an ONNX model (folded, lowered, ready for passes: ``PruneState.start(load(path))``)."""
    return ONNX.load(model, input_shapes=input_shapes)


def tolerance(cfg: PruneConfig) -> Tolerance:
    return Tolerance(cfg.rtol, cfg.atol, cfg.seed)


def prune(model, config: PruneConfig | None = None, *, example_inputs=None, **options):
    """Prune ``model`` and verify the result (unless ``verify="off"``).

    ``model`` is an ONNX path or ``onnx.ModelProto`` (returns a :class:`PruneResult`), or a ``torch.nn.Module``
    with ``example_inputs`` (a tensor or a tuple; returns a ``TorchPruneResult`` whose ``model`` is the smaller
    module). Options are the fields of :class:`PruneConfig` (``method``, ``ratio``, ``round_to`` …) and of the
    method's options (``budget``, ``energy`` …). Raises :class:`VerificationError` if the pruned model is not equal
    to the masked original.
    """
    return run(frontend_for(model), model, PruneConfig.make(config, **options), example_inputs=example_inputs)


def run(frontend: Frontend, model, cfg: PruneConfig, *, example_inputs=None):
    """:func:`prune` through a given frontend (e.g. the torch one with ``baked="freeze"``)."""
    source = frontend.load(model, input_shapes=cfg.input_shapes, example_inputs=example_inputs)
    pipeline, done, frozen = planned_run(source, cfg)
    verification = None
    if cfg.verify != "off":
        with progress.task("verifying"):
            verification = require(pipeline.verify(done))
    cost = run_cost(done)  # before finishing: that gives back dynamic dimensions, and loses the shapes MACs need
    finished = frontend.finish(source, done, verification, cfg)
    notes = ()
    if frozen:
        calls = {n: path for path, nodes in getattr(source, "module_calls", {}).items() for n in nodes}
        where = list(dict.fromkeys(calls.get(n, n) for n in frozen))  # a torch module's paths where it has them
        notes = (f"kept an instance of the module's own class: channels touched by {len(frozen)} node(s) with sizes "
                 "it could not hold (literal channel counts in forward, or widths a Hugging Face config cannot "
                 f"describe) were frozen and the plan made again ({', '.join(where[:5])}"
                 f"{' …' if len(where) > 5 else ''})",)
    report = make_report(cfg, done, finished, verification, notes, cost)
    if cfg.require_removal and report.changed_nothing:
        raise NothingRemovedError(f"nothing was removed: {report.nothing_removed_reason()}; nothing written")
    return frontend.result(finished, done, report, done.state.channels)


def planned_run(source, cfg: PruneConfig) -> tuple[Pipeline, Run, tuple[str, ...]]:
    """The run of the configured pipeline; again with more nodes excluded while the emitter asks for that
    (``RemoveChannels``' ``replan``: the torch frontend with ``baked="freeze"``), and the nodes so excluded."""
    excluded: tuple[str, ...] = ()
    while True:
        pipeline = Pipeline(presets.passes(cfg, excluded), tolerance=tolerance(cfg), each=cfg.verify == "each")
        done = pipeline.run(PruneState.start(source))
        more = tuple(n for r in done.state.history for n in r.stats.get("replan", ()) if n not in excluded)
        if not more:
            return pipeline, done, excluded
        excluded += tuple(dict.fromkeys(more))


def plan(model, config: PruneConfig | None = None, *, example_inputs=None, **options) -> Plan:
    """Only decide which units go (analysis, scoring, selection), without changing the model: for training-time
    methods (TPP) that regularise the chosen units before removing them."""
    return planned_state(frontend_for(model), model, PruneConfig.make(config, **options),
                         example_inputs=example_inputs).plan


def planned_state(frontend: Frontend, model, cfg: PruneConfig, *, example_inputs=None) -> PruneState:
    """The state after the planning passes (:func:`graphprune.pipeline.presets.planning`); ``model`` may be a
    source the frontend loaded already."""
    source = model if getattr(model, "frontend", None) is frontend else \
        frontend.load(model, input_shapes=cfg.input_shapes, example_inputs=example_inputs)
    return Pipeline(presets.planning(cfg), tolerance=tolerance(cfg)).run(PruneState.start(source)).state


def inspect(model, input_shapes=None, exclude=(), *, example_inputs=None) -> Inspection:
    """Analyse ``model`` without changing it: channel groups, what is frozen and why, and its cost.
    ``model``: an ONNX path or proto, or an ``nn.Module`` with ``example_inputs``."""
    frontend = frontend_for(model)
    source = frontend.load(model, input_shapes=input_shapes, example_inputs=example_inputs)
    return Inspection(analyse(source.graph, exclude), frontend.cost(source, source.model), source)


def verify_files(original: ModelSource, pruned: str | os.PathLike | onnx.ModelProto, input_shapes=None, *,
                 rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> Verification:
    """Verify a pruned model against its original, by the stages graphprune recorded in its metadata."""
    pruned_model = pruned if isinstance(pruned, onnx.ModelProto) else read_model(Path(pruned))
    source = load(original, input_shapes or metadata.read(pruned_model).input_shapes)
    return verify_recorded(source, pruned_model, Tolerance(rtol, atol, seed))

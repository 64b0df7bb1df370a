"""The ONNX frontend: an ONNX file or ``onnx.ModelProto`` in, a smaller verified ``onnx.ModelProto`` out.

Loading is :mod:`graphprune.frontends.onnx.load`; the surgery :mod:`graphprune.emit.onnx`; each claim a pass makes
is checked by its oracle in :mod:`graphprune.verify` (the table :data:`ORACLES`). Once verified, the output keeps the
original's dynamic dimensions where a check at a second size shows that right (:mod:`graphprune.verify.dynamic`),
and records its plan and analysed shapes in its metadata (:mod:`graphprune.verify.metadata`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import onnx

from graphprune import io, progress
from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.emit.onnx import emit
from graphprune.frontends.base import Emitted, Finished, Frontend
from graphprune.frontends.onnx.load import LoadedModel, load
from graphprune.frontends.onnx.lower import to_ir
from graphprune.ir import Graph
from graphprune.frontends.onnx.latency import latency_table
from graphprune.methods.calib import OnnxAccess
from graphprune.methods.cost import Cost, cost
from graphprune.methods.evaluate import read_labelled, top1
from graphprune.runtime import check_model, latency_ms, run, runnable, seeded_inputs, session
from graphprune.verify import metadata
from graphprune.verify.claims import EditedWeights, MaskedOriginal, Refitted, SameFunction, TruncatedLayers, Unchanged
from graphprune.verify.compare import verify_same
from graphprune.verify.dynamic import dynamic_axes, restore
from graphprune.verify.edits import verify_edits
from graphprune.verify.lowrank import restore_dynamic, verify_lowrank
from graphprune.verify.masked import verify_masked
from graphprune.verify.refit import verify_refit
from graphprune.verify.result import Drift, Tolerance, Verification, drift


@dataclass(frozen=True, eq=False)
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: Any  # graphprune.report.data.PruneReport
    channels: ChannelGraph
    source: LoadedModel

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pruned model atomically; refuses to overwrite the input (or its external data). Over protobuf's
        2 GB (see :func:`graphprune.io.external_data_threshold`) the weights go to ``PATH.data`` next to it."""
        return io.save_model_atomic(self.model, Path(path), self.source.path)


def check_unchanged(claim, source, before, after, tol: Tolerance) -> Verification:
    if before is source.model:  # the masked original of an empty plan: the source, with its declared interface
        return verify_masked(source, after, Plan({}, {}, {}), tol)
    return verify_same(before, after, source.input_shapes, label="unchanged", what="output - input", rtol=tol.rtol,
                       atol=tol.atol, seed=tol.seed)


def check_masked(claim: MaskedOriginal, source, before, after, tol: Tolerance) -> Verification:
    return verify_masked(source, after, claim.plan, tol)


def check_edited(claim: EditedWeights, source, before, after, tol: Tolerance) -> Verification:
    return verify_edits(before, after, claim.edits, source.input_shapes, interface=source.model, rtol=tol.rtol,
                        atol=tol.atol, seed=tol.seed)


def check_truncated(claim: TruncatedLayers, source, before, after, tol: Tolerance) -> Verification:
    return verify_lowrank(before, after, source.input_shapes, interface=source.model, layers=list(claim.layers),
                          rtol=tol.rtol, atol=tol.atol, seed=tol.seed, declared=source.declared)


def check_same(claim: SameFunction, source, before, after, tol: Tolerance) -> Verification:
    return verify_same(before, after, source.input_shapes, label=claim.label, what=claim.what,
                       rtol=max(tol.rtol, claim.rtol), atol=max(tol.atol, claim.atol), seed=tol.seed)


def check_refitted(claim: Refitted, source, before, after, tol: Tolerance) -> Verification:
    return verify_refit(source, after, claim.plan, claim.names, tol)


ORACLES: Mapping[type, Callable[..., Verification]] = {
    Unchanged: check_unchanged,
    MaskedOriginal: check_masked,
    EditedWeights: check_edited,
    TruncatedLayers: check_truncated,
    Refitted: check_refitted,
    SameFunction: check_same,
}


class OnnxFrontend(Frontend):
    name = "onnx"
    kind = "onnx"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, (str, os.PathLike, onnx.ModelProto))

    def load(self, model: Any, *, input_shapes=None, example_inputs=None) -> LoadedModel:
        return replace(load(model, input_shapes or {}), frontend=self)

    def emit(self, source: LoadedModel, model: onnx.ModelProto, plan: Plan) -> Emitted:
        return Emitted(emit(model, source.graph, plan))

    def check(self, claim, source, before, after, tolerance: Tolerance) -> Verification:
        return ORACLES[type(claim)](claim, source, before, after, tolerance)

    def structure_problem(self, model: onnx.ModelProto) -> str | None:
        try:
            with runnable(model) as checkable:  # a large model from a file: no serialised copy
                check_model(checkable)
        except onnx.checker.ValidationError as exc:
            return str(exc).splitlines()[0]
        return None

    def drift(self, source: LoadedModel, model: onnx.ModelProto, tolerance: Tolerance) -> Drift:
        feeds = seeded_inputs(source.model, source.input_shapes, tolerance.seed)
        return drift(run(session(source.model, once=True), feeds), run(session(model, once=True), feeds))

    def cost(self, source: LoadedModel, model: onnx.ModelProto, graph: Graph | None = None) -> Cost:
        if model is source.model:
            return cost(source.graph)
        return cost(graph if graph is not None else to_ir(model))

    def access(self, source: LoadedModel) -> OnnxAccess:
        return OnnxAccess(source.input_shapes)

    def graph_after(self, source: LoadedModel, model: onnx.ModelProto) -> Graph | None:
        return to_ir(model)

    def latency(self, source: LoadedModel, before, after, seed: int, threads: int = 0) -> dict[str, Any]:
        feeds = seeded_inputs(source.model, source.input_shapes, seed)
        lb, la = latency_ms(before, feeds, threads=threads), latency_ms(after, feeds, threads=threads)
        return {"before_ms": lb["median"], "after_ms": la["median"], "before": lb, "after": la}

    def latency_table(self, source: LoadedModel, channels, *, threads: int, round_to: int, cache: bool):
        return latency_table(source, channels, threads=threads, round_to=round_to, cache=cache)

    def finish(self, source: LoadedModel, run, verification: Verification | None, config) -> Finished:
        """The untouched original when nothing changed; else the pruned model with its plan and analysed shapes in
        its metadata (``graphprune verify`` reads them) and, once shown right, the original's dynamic dimensions."""
        state = run.state
        if (state.plan is None or state.plan.empty) and not run.modified:
            if source.given is None:
                return Finished(source.original)  # read again from the file: already a proto of our own
            out = onnx.ModelProto()
            out.CopyFrom(source.given)
            return Finished(out)
        entries: dict[str, Any] = {"input_shapes": source.input_shapes}
        if state.plan is not None:
            entries["plan"] = state.plan
        pruned = metadata.write(state.model, **entries)
        model, notes = keep_dynamic(source, run, pruned, verification, Tolerance(config.rtol, config.atol, config.seed))
        return Finished(model, notes)

    def accuracy(self, source: LoadedModel, before, after, data) -> dict[str, Any]:
        labelled = read_labelled(data, source)
        return {"before": top1(before, source, labelled), "after": top1(after, source, labelled),
                "points": labelled.n_points, "data": labelled.where.removeprefix("--eval ")}

    def result(self, finished: Finished, run, report, channels) -> PruneResult:
        return PruneResult(finished.model, run.state.plan, report, channels, run.state.source)


def keep_dynamic(source: LoadedModel, run, pruned: onnx.ModelProto, verification: Verification | None,
                 tolerance: Tolerance) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``pruned`` with the original's dynamic dimensions back when that is shown right (see
    :mod:`graphprune.verify.dynamic`), and the report line saying what happened (none for a static original)."""
    plan = run.state.plan
    decomposed = [i for i, stage in enumerate(run.stages) if isinstance(stage.claim, TruncatedLayers)]
    if (plan is None or plan.empty) and not decomposed or not dynamic_axes(source):
        return pruned, ()
    static = f"the pruned model keeps the analysed input shapes {dict(source.input_shapes)}"
    if verification is None:
        return pruned, (f"{static}: dynamic dimensions are restored only when verified (verification is off)",)
    edited = [stage.name for i, stage in enumerate(run.stages) if not stage.claim.equals_masked and i not in decomposed]
    if edited:
        return pruned, (f"{static}: dynamic dimensions are restored after channel removal and low rank alone, not "
                        f"after {', '.join(edited)}",)
    with progress.task("checking dynamic dimensions"):
        if decomposed:  # low rank: its own oracle at the second size (verify/lowrank.py)
            (i,) = decomposed
            stage = run.stages[i]
            restored = restore_dynamic(source, stage.before, pruned, list(stage.claim.layers), plan, tolerance,
                                       later=tuple(s.name for s in run.stages[i + 1:]))
        else:
            restored = restore(source, pruned, plan, rtol=tolerance.rtol, atol=tolerance.atol, seed=tolerance.seed)
    return (pruned if restored.model is None else restored.model), (restored.note,)


ONNX = OnnxFrontend()

"""The Python API. The CLI calls exactly these functions.

    result = graphprune.prune("model.onnx", method="magnitude", ratio=0.5)
    result.save("small.onnx")
    print(result.report)
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from graphprune import io
from graphprune import progress
from graphprune.channels.analysis import ChannelGraph, analyse
from graphprune.config import PruneConfig
from graphprune.methods.cost import Cost, cost
from graphprune.errors import UnsupportedModelError, UsageError, VerificationError
from graphprune.frontends.onnx import load as onnx_frontend
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.channels.plan import Plan
from graphprune.report.data import PruneReport, layer_report, summarise_groups
from graphprune.runtime import latency_ms, seeded_inputs
from graphprune.pipeline.stages import pipeline, self_verifying, verify_pipeline, verify_recorded, verify_stage
from graphprune.pipeline.state import PruneState
from graphprune.verify.onnx import Verification

PLAN_KEY = "graphprune.plan"
SHAPES_KEY = "graphprune.input_shapes"
ModelSource = str | os.PathLike | onnx.ModelProto


@dataclass(frozen=True, eq=False)
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: PruneReport
    channels: ChannelGraph
    source: LoadedModel

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pruned model atomically; refuses to overwrite the input (or its external data). Over protobuf's
        2 GB (see :func:`graphprune.io.external_data_threshold`) the weights go to ``PATH.data`` next to it."""
        return io.save_model_atomic(self.model, Path(path), self.source.path)


@dataclass(frozen=True, eq=False)
class Inspection:
    channels: ChannelGraph
    cost: Cost
    source: LoadedModel


def load(model: ModelSource, input_shapes=None) -> LoadedModel:
    return onnx_frontend.load(model, input_shapes or {})


def is_torch_module(model) -> bool:
    """True for an ``nn.Module``, without importing torch for the ONNX path."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def prune(model, config: PruneConfig | None = None, *, example_inputs=None, **options):
    """Prune ``model`` and verify the result (unless ``verify="off"``).

    ``model`` is an ONNX path or ``onnx.ModelProto`` (returns a :class:`PruneResult`), or a ``torch.nn.Module``
    with ``example_inputs`` (a tensor or a tuple; returns a ``TorchPruneResult`` whose ``model`` is the smaller
    module). Options are the fields of :class:`PruneConfig` (``method``, ``ratio``, ``scope``, ``round_to`` …).
    Raises :class:`VerificationError` if the pruned model is not equal to the masked original.
    """
    if is_torch_module(model):
        from graphprune.torch.api import prune_module

        return prune_module(model, require_examples(example_inputs), PruneConfig.make(config, **options))
    cfg = PruneConfig.make(config, **options)
    source = load(model, cfg.input_shapes)
    state = PruneState.start(source)
    stages = []  # (pass, state before, state after) of every pass that changed the model; see stages.py
    passes = pipeline(cfg)
    for i, p in enumerate(passes):
        with progress.task(f"[{i + 1}/{len(passes)}] {p.name}"):
            before, state = state, p(state)
        if state.history[-1].modified:
            stages.append((p, before, state))
        if state.channels is not None and cfg.strict:
            refuse_unmapped(state.channels)
        if cfg.verify == "each" and state.history[-1].modified:
            with progress.task(f"verifying {p.name}"):
                require(verify_stage(source, p, before, state, cfg))
    verification = None
    if cfg.verify != "off":
        with progress.task("verifying"):
            verification = require(verify_pipeline(source, stages, state, cfg))
    pruned, notes = keep_dynamic(source, state, stages, finish(source, state, cfg), cfg, verification)
    report = make_report(cfg, source, state, pruned, verification, notes)
    return PruneResult(pruned, state.plan, report, state.channels, source)


def plan(model, config: PruneConfig | None = None, *, example_inputs=None, **options) -> Plan:
    """Only decide which units go (analysis, scoring, selection), without changing the model: for training-time
    methods (TPP) that regularise the chosen units before removing them."""
    cfg = PruneConfig.make(config, **options)
    if is_torch_module(model):
        from graphprune.torch.api import plan_module

        return plan_module(model, require_examples(example_inputs), cfg).plan
    from graphprune.passes import RemoveChannels

    state = PruneState.start(load(model, cfg.input_shapes))
    for p in pipeline(cfg):
        if isinstance(p, RemoveChannels):
            return state.plan
        state = p(state)
    return state.plan


def require_examples(example_inputs):
    if example_inputs is None:
        raise UsageError("a torch model needs example_inputs (a tensor or a tuple of tensors) to trace its shapes")
    return example_inputs


def refuse_unmapped(cg: ChannelGraph) -> None:
    if cg.unmapped:
        ops = sorted({f"{n.op} ({n.name})" for n in cg.unmapped})
        raise UnsupportedModelError(f"--strict: no channel rule for {len(ops)} node(s): {', '.join(ops[:5])}"
                                    f"{' …' if len(ops) > 5 else ''}")


def require(v: Verification) -> Verification:
    if not v.ok:
        raise VerificationError(f"verification failed: {v.failure}; nothing written")
    return v


def finish(source: LoadedModel, state: PruneState, cfg: PruneConfig) -> onnx.ModelProto:
    """The output model: the untouched original when nothing was removed, else the pruned model with the plan
    and the analysed input shapes in its metadata (``graphprune verify`` reads them)."""
    if (state.plan is None or state.plan.empty) and not any(r.modified for r in state.history):
        if source.given is None:
            return source.original  # read again from the file: already a proto of our own
        out = onnx.ModelProto()
        out.CopyFrom(source.given)
        return out
    out = state.model
    props = {p.key: p.value for p in out.metadata_props}
    if state.plan is not None:
        props[PLAN_KEY] = state.plan.to_json()
    props[SHAPES_KEY] = json.dumps({k: list(v) for k, v in source.input_shapes.items()})
    del out.metadata_props[:]
    onnx.helper.set_model_props(out, props)
    return out


def keep_dynamic(source: LoadedModel, state: PruneState, stages: list, pruned: onnx.ModelProto, cfg: PruneConfig,
                 verification: Verification | None) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``pruned`` with the original's dynamic dimensions back when that is shown right (see
    :mod:`graphprune.dynamic`), and the report line saying what happened (none for a static original)."""
    from graphprune.verify.dynamic import dynamic_axes, restore

    if state.plan is None or state.plan.empty or not dynamic_axes(source):
        return pruned, ()
    static = f"the pruned model keeps the analysed input shapes {dict(source.input_shapes)}"
    if verification is None:
        return pruned, (f"{static}: dynamic dimensions are restored only when verified (verification is off)",)
    edited = [p.name for p, _, _ in stages if self_verifying(p) and not p.value_preserving]
    if edited:
        return pruned, (f"{static}: dynamic dimensions are restored after channel removal alone, not after "
                        f"{', '.join(edited)}",)
    with progress.task("checking dynamic dimensions"):
        restored = restore(source, pruned, state.plan, rtol=cfg.rtol, atol=cfg.atol, seed=cfg.seed)
    return (pruned if restored.model is None else restored.model), (restored.note,)


def make_report(cfg: PruneConfig, source: LoadedModel, state: PruneState, pruned: onnx.ModelProto,
                verification: Verification | None, notes: tuple[str, ...] = ()) -> PruneReport:
    before = cost(source.graph)
    after_graph = onnx_frontend.to_ir(state.model) if any(r.modified for r in state.history) else None
    after = before if after_graph is None else cost(after_graph)
    latency = None
    if cfg.latency:
        feeds = seeded_inputs(source.model, source.input_shapes, cfg.seed)
        with progress.task("measuring latency"):
            lb, la = latency_ms(source.model, feeds), latency_ms(pruned, feeds)
        latency = {"before_ms": lb["median"], "after_ms": la["median"], "before": lb, "after": la}
    options = {k: v for k, v in asdict(cfg).items() if k not in ("input_shapes",)}
    options["input_shapes"] = {k: list(v) for k, v in source.input_shapes.items()}
    unmapped = tuple(sorted({f"{n.op} ({n.name})" for n in state.channels.unmapped})) if state.channels else ()
    return PruneReport(method=cfg.method, options=options, before=before, after=after,
                       groups=summarise_groups(state.channels, state.plan) if state.channels else (),
                       unmapped_ops=unmapped, verification=verification, passes=state.history, latency=latency,
                       notes=tuple(n for r in state.history for n in r.stats.get("notes", ())) + notes,
                       layers=layer_report(source.graph, after_graph, state.plan, state.channels))


def inspect(model, input_shapes=None, exclude=(), *, example_inputs=None) -> Inspection:
    """Analyse ``model`` without changing it: channel groups, what is frozen and why, and its cost.
    ``model``: an ONNX path or proto, or an ``nn.Module`` with ``example_inputs``."""
    if is_torch_module(model):
        from graphprune.torch.api import inspect_module

        return inspect_module(model, require_examples(example_inputs), exclude)
    source = load(model, input_shapes)
    return Inspection(analyse(source.graph, exclude), cost(source.graph), source)


def verify_files(original: ModelSource, pruned: str | os.PathLike | onnx.ModelProto, input_shapes=None, *,
                 rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> Verification:
    """Verify a pruned model against its original, using the plan graphprune stored in its metadata."""
    pruned_model = pruned if isinstance(pruned, onnx.ModelProto) else onnx_frontend.read_model(Path(pruned))
    props = {p.key: p.value for p in pruned_model.metadata_props}
    if not input_shapes and SHAPES_KEY in props:
        input_shapes = {k: tuple(v) for k, v in json.loads(props[SHAPES_KEY]).items()}
    source = load(original, input_shapes)
    plan = Plan.from_json(props[PLAN_KEY]) if PLAN_KEY in props else Plan({}, {}, {})
    return verify_recorded(source, pruned_model, plan, props, rtol=rtol, atol=atol, seed=seed)

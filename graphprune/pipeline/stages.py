"""Pipelines of stages (``--method M --then lowrank``) and how each stage is verified against its own oracle.

A pass may verify itself: it defines ``verify_stage(source, before, after, *, rtol, atol, seed) -> Verification``
(duck-typed; :class:`graphprune.passes.LowRank` does). Passes without it are the channel stage, verified as
before against the masked original. A pipeline is verified as a whole like this:

* the channel stage: the model as it was just before the first self-verifying pass, against the masked original
  (the plan's oracle) — skipped when no channel method ran;
* each self-verifying pass: its output against its oracle built from its input (for low rank: the truncated
  original, and the full-rank decomposition against the input);
* drift of the final model against the unpruned original is measured, not asserted.

Every check must pass; their names are prefixed by the stage (``LowRank/truncated_original``) when there is
more than one stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from graphprune.errors import UsageError

if TYPE_CHECKING:
    from graphprune.config import PruneConfig
    from graphprune.frontends.onnx.load import LoadedModel
    from graphprune.passes import Pass
    from graphprune.pipeline.state import PruneState
    from graphprune.verify.onnx import Verification

THEN_METHODS = ("lowrank",)  # methods that may follow another one with --then
Stage = tuple["Pass", "PruneState", "PruneState"]  # (pass, state before, state after)


def lowrank_passes(config: "PruneConfig") -> list["Pass"]:
    from graphprune.passes.lowrank import LowRank

    return [LowRank(energy=config.energy, rank_ratio=config.rank_ratio, sv_threshold=config.sv_threshold,
                    scheme=config.scheme, round_to=config.round_to, exclude=config.exclude)]


def pipeline(config: "PruneConfig") -> list["Pass"]:
    """The passes of ``--method`` followed by those of every ``--then`` method."""
    from graphprune.pipeline.presets import METHODS

    from graphprune.passes import FoldBatchNorm

    passes = [p for name in (config.method, *config.then) for p in METHODS[name](config)]
    return passes + [FoldBatchNorm()] if config.fold else passes


def check_config(config: "PruneConfig") -> None:
    """The low-rank options and ``--then``: raise :class:`UsageError` when inconsistent."""
    from graphprune.methods.lowrank import check_rank_options

    methods = (config.method, *config.then)
    for name in config.then:
        if name not in THEN_METHODS:
            raise UsageError(f"--then {name}: only {', '.join(THEN_METHODS)} can follow another method")
    if len(set(methods)) != len(methods):
        raise UsageError(f"method '{config.method}' appears twice in the pipeline {' -> '.join(methods)}")
    check_rank_options(config.energy, config.rank_ratio, config.sv_threshold, config.round_to)
    if config.scheme not in ("channel", "spatial"):
        raise UsageError(f"scheme '{config.scheme}' must be 'channel' or 'spatial'")
    rank_flags = [f for f, v in (("--energy", config.energy), ("--rank-ratio", config.rank_ratio),
                                 ("--sv-threshold", config.sv_threshold)) if v is not None]
    if rank_flags and "lowrank" not in methods:
        raise UsageError(f"{rank_flags[0]} applies to low-rank decomposition: add --then lowrank or use "
                         f"--method lowrank")


def self_verifying(p: "Pass") -> bool:
    return callable(getattr(p, "verify_stage", None))


def verify_stage(source: "LoadedModel", p: "Pass", before: "PruneState", after: "PruneState",
                 config: "PruneConfig") -> "Verification":
    """Verify one pass's output (``--verify each``)."""
    from graphprune.verify.onnx import verify

    if self_verifying(p):
        return p.verify_stage(source, before, after, rtol=config.rtol, atol=config.atol, seed=config.seed)
    return verify(source, after.model, after.plan, rtol=config.rtol, atol=config.atol, seed=config.seed)


def verify_pipeline(source: "LoadedModel", stages: Sequence[Stage], final: "PruneState",
                    config: "PruneConfig") -> "Verification":
    """Verify a whole run (see the module docstring); unchanged from the spine when no pass verifies itself."""
    from graphprune.verify.onnx import verify

    opts = dict(rtol=config.rtol, atol=config.atol, seed=config.seed)
    own = [s for s in stages if self_verifying(s[0])]
    if not own:  # nothing changed, or only the channel stage did: the spine's check
        from graphprune.channels.plan import Plan

        return verify(source, final.model, final.plan if final.plan is not None else Plan({}, {}, {}), **opts)
    results: list[tuple[str, "Verification"]] = []
    first_before = own[0][1]
    if first_before.plan is not None:
        results.append(("", verify(source, first_before.model, first_before.plan, **opts)))
    for p, before, after in own:
        results.append((p.name, p.verify_stage(source, before, after, **opts)))
    return combine(source, results, final.model, config.seed)


def combine(source: "LoadedModel", results: list[tuple[str, "Verification"]], final, seed: int) -> "Verification":
    """One verification from the stages' ones; drift is the final model's against the unpruned original."""
    from graphprune.runtime import run, seeded_inputs, session
    from graphprune.verify.onnx import Verification, drift

    if len(results) == 1:
        return results[0][1]
    checks = {(f"{stage}/{k}" if stage else k): v for stage, res in results for k, v in res.checks.items()}
    ok = all(res.ok for _, res in results)
    worst = max(res.max_error for _, res in results)
    overall = None
    if ok:
        feeds = seeded_inputs(source.model, source.input_shapes, seed)
        overall = drift(run(session(source.model, once=True), feeds), run(session(final, once=True), feeds))
    return Verification(ok, checks, worst, overall)


def verify_recorded(source: "LoadedModel", pruned, plan, props: Mapping[str, str], *, rtol: float, atol: float,
                    seed: int) -> "Verification":
    """``graphprune verify``: check a stored model by the stages its metadata ``props`` records: low rank (alone or
    after channel pruning), weight-value edits (SiPP, randomized PFP), else the channel stage alone."""
    from graphprune.methods.edits import EDITS_KEY
    from graphprune.methods.edits import verify_stored as verify_edits_stored
    from graphprune.methods.lowrank import LOWRANK_KEY
    from graphprune.verify.onnx import verify

    opts = dict(rtol=rtol, atol=atol, seed=seed)
    if LOWRANK_KEY in props:
        return verify_stored(source, pruned, plan, **opts)
    if EDITS_KEY in props or plan.meta.get("reweight"):
        return verify_edits_stored(source, pruned, plan, **opts)
    return verify(source, pruned, plan, **opts)


def verify_stored(source: "LoadedModel", pruned, plan, *, rtol: float, atol: float, seed: int) -> "Verification":
    """``graphprune verify`` for a model whose metadata records low-rank layers: rebuild the channel stage's
    output from the stored plan (when there is one), then verify both stages."""
    from graphprune.emit.onnx import emit
    from graphprune.verify.onnx import verify
    from graphprune.verify.lowrank import verify_lowrank

    results = []
    before = source.model
    if not plan.empty:
        before = emit(source.model, source.graph, plan)
        results.append(("", verify(source, before, plan, rtol=rtol, atol=atol, seed=seed)))
    results.append(("LowRank", verify_lowrank(before, pruned, source.input_shapes, interface=source.model,
                                              rtol=rtol, atol=atol, seed=seed)))
    return combine(source, results, pruned, seed)

"""``--method`` presets: each method owns a small frozen options record (its fields are the method's own CLI flags
and API keywords, with their help and validation) and builds the explicit list of passes it runs.

    magnitude / random / bn_scale / taylor:  AnalyseChannels → <score> → Select → RemoveChannels
    sampling:  Calibrate → AnalyseChannels → SensitivityScore → SamplingSelect → RemoveChannels (→ Reweight)
    --reconstruct (channel methods on ONNX):  Calibrate first, Reconstruct after RemoveChannels
    sipp:      Calibrate → SiPPSparsify
    lowrank:   LowRank

:func:`passes` chains ``--method`` with every ``--then`` method (and ``FoldBatchNorm`` for ``--fold``). What every run
shares (ratio, round-to, exclude, verification …) is :class:`graphprune.config.PruneConfig`'s.

An option field's metadata says how the CLI spells it (``cli``: argparse flags and keywords; none: API only), its
help, and ``unused``: the error to raise when it is given a non-default value but no method of the pipeline
reads it (for options whose presence changes what the user expects; others are ignored when unused).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from graphprune.errors import UsageError
from graphprune.methods.calib import CalibInput
from graphprune.methods.lowrank import DEFAULT_MIN_SAVING, check_min_saving, check_rank_options
from graphprune.methods.reconstruct import RECONSTRUCT_POINTS, RIDGE
from graphprune.methods.sensitivity import DELTA
from graphprune.passes import AnalyseChannels, FoldBatchNorm, MagnitudeScore, RandomScore, RemoveChannels, Select
from graphprune.passes.bn_scale import BNScaleScore
from graphprune.passes.calibrate import Calibrate
from graphprune.passes.latency import MeasureLatency
from graphprune.passes.lowrank import LowRank
from graphprune.passes.reconstruct import Reconstruct
from graphprune.passes.refit_choice import RefitChoice
from graphprune.passes.reweight import Reweight
from graphprune.passes.sampling import SamplingSelect
from graphprune.passes.sensitivity import SensitivityScore
from graphprune.passes.sipp import SiPPSparsify
from graphprune.passes.taylor import TaylorScore, check_labelled
from graphprune.pipeline.base import Pass

if TYPE_CHECKING:
    from graphprune.config import PruneConfig


def option(default: Any, help: str, *, cli: tuple | None = (), unused: str | None = None, **argparse: Any):
    """A method option: ``cli`` the flags (``()``: ``--name-with-dashes``; ``None``: API only), ``argparse`` the
    other ``add_argument`` keywords, ``unused`` the error when given to a pipeline that does not read it."""
    metadata = {"help": help, "cli": cli, "argparse": argparse, "unused": unused}
    if isinstance(default, Mapping):  # an empty mapping: a fresh read-only one per record
        return field(default_factory=lambda: MappingProxyType(dict(default)), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (made by its factory when it has one)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base of the method option records; ``__post_init__`` validates (a :class:`UsageError`, one line)."""


BUDGETS = ("channels", "params", "macs", "latency")
DEFAULT_BUDGET = "params"  # what --ratio is a fraction of, unless --budget says otherwise (every channel method)


def budget_option():
    """``--budget``, shared by every channel method (one field, one default, so the CLI flag means one thing)."""
    return option(None, "what --ratio is a fraction of, for every channel method: 'params' (default) or 'macs' of "
                  "the whole model (magnitude / random / bn_scale / taylor meet it with one uniform fraction per "
                  "group, or with --global one ranking across groups; sampling with one ε), 'latency': of the "
                  "latency measured per layer on this machine's onnxruntime (score methods, ONNX; cached), or "
                  "'channels': each group loses that fraction of its channels (score methods only)", choices=BUDGETS)


def check_budget(budget: str | None, allowed: tuple[str, ...] = BUDGETS) -> None:
    if budget is not None and budget not in allowed:
        raise UsageError(f"budget '{budget}' must be one of {', '.join(allowed)}")


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions(Options):
    """How the channel analysis couples (:func:`graphprune.channels.analysis.analyse`), for every channel method."""

    query_heads: bool = option(
        False, "grouped-query attention: prune query heads inside each key / value group (the same heads in every "
        "group; the KV heads kept) instead of whole KV groups with their query heads", action="store_true",
        unused="--query-heads applies to the channel methods ({readers}), not to '{method}'")


@dataclass(frozen=True, kw_only=True)
class SelectOptions(AnalysisOptions):
    """Selection by score (:class:`graphprune.passes.Select`)."""

    budget: Literal["channels", "params", "macs", "latency"] | None = budget_option()

    scope: Literal["local", "global"] = option(
        "local", "rank units across all groups (default: the ratio applies to each group)",
        cli=("--global",), action="store_const", const="global")
    threshold: float | None = option(None, "remove every unit whose score is <= T instead of a ratio", type=float)
    max_group_ratio: float = option(0.9, "with --global: most any group may lose", type=float)
    normalizer: Literal["mean", "lamp"] = option(
        "mean", "with --global: how scores are made comparable across groups: 'mean' (default: over the group's "
        "mean) or 'lamp' (LAMP, Lee et al. 2021: a unit's score² over the sum of score² of its group's units scoring "
        "at least as high)", choices=("mean", "lamp"))
    latency_threads: int = option(1, "with --budget latency: onnxruntime threads to measure with (default 1, where "
                                  "the latency model is measured reliable; 0: onnxruntime's choice, all cores)",
                                  type=int, metavar="N")

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if int(self.latency_threads) != self.latency_threads or self.latency_threads < 0:
            raise UsageError(f"latency threads {self.latency_threads} must be a non-negative integer")
        if self.scope not in ("local", "global"):
            raise UsageError(f"scope '{self.scope}' must be 'local' or 'global'")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise UsageError(f"max group ratio {self.max_group_ratio} must be in (0, 1)")
        if self.normalizer not in ("mean", "lamp"):
            raise UsageError(f"normalizer '{self.normalizer}' must be 'mean' or 'lamp'")
        if self.normalizer != "mean" and self.scope != "global":
            raise UsageError("--normalizer ranks units across groups: add --global")
        if self.threshold is not None and self.scope == "global":
            raise UsageError("--threshold removes every unit scoring at or below T whatever its group; --global ranks "
                             "units across groups to meet --ratio: give one of them")


@dataclass(frozen=True, kw_only=True)
class CalibOptions(Options):
    """Calibration data for the data-informed methods (:mod:`graphprune.methods.calib`)."""

    calib: Any = option(None, "sampling / sipp: calibration inputs, .npz (arrays named like the model inputs, axis 0 = "
                        "points) or .npy (one input); without it, seeded random inputs (data-free); taylor "
                        "(FILE.py:FUNCTION only): .npz with the inputs and 'labels'", metavar="FILE",
                        unused="--calib is read by the data-informed methods ({readers}), not by '{method}'")
    max_points: int = option(256, "sampling / sipp / taylor: score on at most N calibration points (default 256)",
                             type=int, metavar="N")

    def __post_init__(self) -> None:
        if int(self.max_points) != self.max_points or self.max_points < 1:
            raise UsageError(f"max points {self.max_points} must be a positive integer")
        if self.calib is not None and not isinstance(self.calib, (str, os.PathLike, CalibInput)):
            object.__setattr__(self, "calib", CalibInput(self.calib))


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions(CalibOptions):
    """Layer-wise reconstruction after channel removal (passes/reconstruct.py), for every channel method."""

    reconstruct: bool = option(False, "after removing channels, refit every layer that lost input channels so its "
                               "output matches the original's on the calibration inputs (--calib; without it, seeded "
                               "random inputs), by ridge least squares; verified against the masked original with "
                               "the refitted weights", action="store_true")
    ridge: float = option(RIDGE, "--reconstruct: the smallest ridge λ tried, relative to each layer's mean input "
                          "variance (default 1e-3); the held-out calibration points choose among it × 1 … 1e5, "
                          "pulling the weights towards the pruned ones", type=float,
                          unused="--ridge is read by --reconstruct only")
    reconstruct_points: int = option(
        RECONSTRUCT_POINTS, f"--reconstruct: refit on at most N calibration points (default {RECONSTRUCT_POINTS}; "
        "apart from --max-points, since a least-squares fit gains from more points than a ranking needs)",
        type=int, metavar="N", unused="--reconstruct-points is read by --reconstruct only")
    reconstruct_choice: Literal["refit", "score"] = option(
        "refit", "--reconstruct: which units of each group go (as many as the method chose): 'refit' (default) those "
        "whose loss the kept channels rebuild best (structured Optimal Brain Surgeon on the calibration inputs); "
        "'score' the method's lowest-scored", choices=("refit", "score"))
    reconstruct_inputs: Literal["auto", "sequential", "original"] = option(
        "auto", "--reconstruct: 'sequential' refits the layers wave by wave on the activations of the model refitted "
        "so far (two calibration runs per wave); 'original' all at once from one run of the original, on its "
        "activations restricted to the kept channels (faster, weaker when much is removed); 'auto' (default): "
        "sequential up to 24 waves", choices=("auto", "sequential", "original"))

    def __post_init__(self) -> None:
        CalibOptions.__post_init__(self)
        if self.reconstruct_choice not in ("refit", "score"):
            raise UsageError(f"reconstruct choice '{self.reconstruct_choice}' must be refit or score")
        if self.reconstruct_inputs not in ("auto", "sequential", "original"):
            raise UsageError(f"reconstruct inputs '{self.reconstruct_inputs}' must be auto, sequential or original")
        if not (math.isfinite(self.ridge) and self.ridge >= 0):
            raise UsageError(f"ridge {self.ridge} must be a finite number >= 0")
        if int(self.reconstruct_points) != self.reconstruct_points or self.reconstruct_points < 1:
            raise UsageError(f"reconstruct points {self.reconstruct_points} must be a positive integer")
        refit_options = ("ridge", "reconstruct_points", "reconstruct_inputs", "reconstruct_choice")
        changed = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(self)
                   if f.name in refit_options and getattr(self, f.name) != default_of(f)]
        if changed and not self.reconstruct:
            raise UsageError(f"{', '.join(changed)} set how --reconstruct refits: add --reconstruct")


def calib_needs_reconstruct(method: str) -> Callable[[ReconstructOptions], ReconstructOptions]:
    """A score-only method reads calibration data only to reconstruct."""
    def check(opts: ReconstructOptions) -> ReconstructOptions:
        if opts.calib is not None and not opts.reconstruct:
            raise UsageError(f"--calib is read by the data-informed methods (sampling, sipp, taylor) and by "
                             f"--reconstruct, not by '{method}' alone: add --reconstruct")
        return opts
    return check


@dataclass(frozen=True, kw_only=True)
class RandomOptions(SelectOptions, ReconstructOptions):
    def __post_init__(self) -> None:
        SelectOptions.__post_init__(self)
        ReconstructOptions.__post_init__(self)


@dataclass(frozen=True, kw_only=True)
class NormOptions(RandomOptions):
    norm: Literal[1, 2] = option(1, "magnitude norm (default 1)", type=int, choices=(1, 2))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in (1, 2):
            raise UsageError(f"norm {self.norm} must be 1 or 2")


@dataclass(frozen=True, kw_only=True)
class DeltaOptions(CalibOptions):
    delta: float = option(DELTA, "sampling / sipp: failure probability δ of the sampling bound (default 1e-16)",
                          type=float)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.delta < 1.0:
            raise UsageError(f"delta {self.delta} must be in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(DeltaOptions, ReconstructOptions, AnalysisOptions):
    budget: Literal["params", "macs"] | None = budget_option()
    sampling: Literal["deterministic", "randomized"] = option(
        "deterministic", "sampling: keep the top channels by sensitivity (default), or draw them (--seed) and "
        "reweight the kept ones by count/(m·p)", choices=("deterministic", "randomized"))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_budget(self.budget)
        if self.sampling not in ("deterministic", "randomized"):
            raise UsageError(f"sampling '{self.sampling}' must be 'deterministic' or 'randomized'")
        if self.reconstruct and self.sampling == "randomized":
            raise UsageError("--reconstruct refits the layers randomized sampling reweights: use it with "
                             "deterministic sampling")


@dataclass(frozen=True, kw_only=True)
class SiPPOptions(DeltaOptions):
    sipp_mode: Literal["deterministic", "randomized", "hybrid"] = option(
        "deterministic", "sipp: global top weights by sensitivity (default), per-neuron sampling with reweighting, or "
        "per neuron whichever bound is smaller; --ratio is the fraction of weights zeroed",
        choices=("deterministic", "randomized", "hybrid"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sipp_mode not in ("deterministic", "randomized", "hybrid"):
            raise UsageError(f"sipp mode '{self.sipp_mode}' must be deterministic, randomized or hybrid")


@dataclass(frozen=True, kw_only=True)
class TaylorOptions(SelectOptions, CalibOptions):
    loss: Any = option(None, "taylor: loss(output, targets) -> scalar tensor; None: cross-entropy", cli=None,
                       unused="loss is read by --method taylor only, not by '{method}'")

    def __post_init__(self) -> None:
        SelectOptions.__post_init__(self)
        if self.loss is not None and not callable(self.loss):
            raise UsageError(f"loss must be a callable loss(output, targets) -> scalar tensor, got "
                             f"{type(self.loss).__name__}")
        if int(self.max_points) != self.max_points or self.max_points < 1:
            raise UsageError(f"max points {self.max_points} must be a positive integer")


def require_labelled(opts: TaylorOptions) -> TaylorOptions:
    """Taylor needs labelled data (a torch model too, which its pass declares)."""
    return dataclasses.replace(opts, calib=check_labelled(opts.calib))


RANK_UNUSED = "{flag} applies to low-rank decomposition: add --then lowrank or use --method lowrank"


@dataclass(frozen=True, kw_only=True)
class LowRankOptions(Options):
    """One rank choice (none given: energy 0.9) and the conv scheme (:mod:`graphprune.methods.lowrank`)."""

    energy: float | None = option(None, "low rank: smallest rank keeping this fraction of Σσ² (default 0.9)",
                                  type=float, unused=RANK_UNUSED)
    rank_ratio: float | None = option(None, "low rank: keep this fraction of each layer's full rank", type=float,
                                      unused=RANK_UNUSED)
    sv_threshold: float | None = option(None, "low rank: keep singular values > T (absolute)", type=float,
                                        unused=RANK_UNUSED)
    scheme: Literal["channel", "spatial"] = option(
        "channel", "low rank conv scheme: channel (kxk then 1x1) or spatial (kx1 then 1xk) (default channel)",
        choices=("channel", "spatial"))
    min_saving: float = option(
        DEFAULT_MIN_SAVING, f"low rank: decompose a layer only if that saves at least this fraction of its MACs "
        f"(default {DEFAULT_MIN_SAVING:g}: below it the extra op costs more latency than it saves; 0: any saving)",
        type=float, unused=RANK_UNUSED)

    def __post_init__(self) -> None:
        check_rank_options(self.energy, self.rank_ratio, self.sv_threshold)
        check_min_saving(self.min_saving)
        if self.scheme not in ("channel", "spatial"):
            raise UsageError(f"scheme '{self.scheme}' must be 'channel' or 'spatial'")


# ---- the presets ------------------------------------------------------------------------------------------------


def channel_pipeline(score: Pass, cfg: "PruneConfig", opts: SelectOptions, exclude: tuple[str, ...]) -> list[Pass]:
    select = Select(ratio=cfg.ratio, budget=opts.budget or DEFAULT_BUDGET, scope=opts.scope, threshold=opts.threshold,
                    round_to=cfg.round_to, max_group_ratio=opts.max_group_ratio, normalizer=opts.normalizer)
    reconstruct = getattr(opts, "reconstruct", False)
    chosen = refit_choice(cfg, opts) if reconstruct and select.threshold is None else []  # a threshold promises what goes
    passes = [analyse(cfg, exclude), score, select, *chosen, RemoveChannels()]
    if select.budget == "latency" and select.threshold is None:
        passes.insert(1, MeasureLatency(threads=opts.latency_threads, round_to=cfg.round_to))
    if reconstruct:
        return [calibrate(cfg, opts), *passes, reconstruct_pass(cfg, opts)]
    return passes


def refit_choice(cfg: "PruneConfig", opts: ReconstructOptions) -> list[Pass]:
    """The pass that re-chooses, for the refit, which units go (none with ``--reconstruct-choice score``)."""
    if opts.reconstruct_choice != "refit":
        return []
    return [RefitChoice(max_points=opts.reconstruct_points, seed=cfg.seed)]


def reconstruct_pass(cfg: "PruneConfig", opts: ReconstructOptions) -> Reconstruct:
    return Reconstruct(ridge=opts.ridge, inputs=opts.reconstruct_inputs, max_points=opts.reconstruct_points,
                       seed=cfg.seed)


def analyse(cfg: "PruneConfig", held: tuple[str, ...]) -> AnalyseChannels:
    """The analysis with the user's ``--exclude`` patterns and the node names the emitter asked to hold whole."""
    return AnalyseChannels(exclude=tuple(cfg.exclude), held=tuple(held), strict=cfg.strict,
                           query_heads=cfg.query_heads)


def calibrate(cfg: "PruneConfig", opts: CalibOptions) -> Calibrate:
    """Load as many points as the passes after it read: the scoring's ``max_points``, reconstruction's own limit."""
    points = max(opts.max_points, opts.reconstruct_points) if getattr(opts, "reconstruct", False) else opts.max_points
    return Calibrate(data=opts.calib, max_points=points, seed=cfg.seed)


def magnitude(cfg: "PruneConfig", opts: NormOptions, exclude) -> list[Pass]:
    """Li et al. 2017: the L1 / L2 norm of every weight slice a unit owns (passes/magnitude.py)."""
    return channel_pipeline(MagnitudeScore(norm=opts.norm), cfg, opts, exclude)


def random(cfg: "PruneConfig", opts: RandomOptions, exclude) -> list[Pass]:
    """Random scores: the baseline every criterion must beat."""
    return channel_pipeline(RandomScore(seed=cfg.seed), cfg, opts, exclude)


def bn_scale(cfg: "PruneConfig", opts: NormOptions, exclude) -> list[Pass]:
    """Network slimming: |γ| of the BatchNormalization on each channel (passes/bn_scale.py)."""
    return channel_pipeline(BNScaleScore(norm=opts.norm), cfg, opts, exclude)


def taylor(cfg: "PruneConfig", opts: TaylorOptions, exclude) -> list[Pass]:
    """First-order Taylor |Σ activation × gradient| over labelled data; torch path only (passes/taylor.py)."""
    score = TaylorScore(calib=opts.calib, loss=opts.loss, max_points=opts.max_points)
    return channel_pipeline(score, cfg, opts, exclude)


def sampling(cfg: "PruneConfig", opts: SamplingOptions, exclude) -> list[Pass]:
    """PFP: data-informed channel sensitivity, one ε for a params / MACs budget (passes/sampling.py)."""
    if opts.budget in ("channels", "latency"):
        raise UsageError(f"sampling meets a params or macs budget with one ε for all groups: --budget {opts.budget} "
                         "applies to the score methods (magnitude, random, bn_scale, taylor)")
    select = SamplingSelect(ratio=cfg.ratio, budget=opts.budget or DEFAULT_BUDGET, sampling=opts.sampling, delta=opts.delta,
                            round_to=cfg.round_to, seed=cfg.seed)
    chosen = refit_choice(cfg, opts) if opts.reconstruct else []
    passes = [calibrate(cfg, opts), analyse(cfg, exclude),
              SensitivityScore(max_points=opts.max_points, seed=cfg.seed), select, *chosen, RemoveChannels()]
    if opts.reconstruct:
        passes.append(reconstruct_pass(cfg, opts))
    return passes + ([Reweight()] if opts.sampling == "randomized" else [])


def sipp(cfg: "PruneConfig", opts: SiPPOptions, exclude) -> list[Pass]:
    """SiPP: zeroes weights (unstructured); shapes are NOT shrunk (passes/sipp.py)."""
    return [calibrate(cfg, opts), SiPPSparsify(ratio=cfg.ratio, mode=opts.sipp_mode, delta=opts.delta,
                                               max_points=opts.max_points, exclude=cfg.exclude, seed=cfg.seed)]


def lowrank(cfg: "PruneConfig", opts: LowRankOptions, exclude) -> list[Pass]:
    """Low-rank decomposition of Conv / Gemm / MatMul where MACs fall by at least --min-saving (passes/lowrank.py)."""
    return [LowRank(energy=opts.energy, rank_ratio=opts.rank_ratio, sv_threshold=opts.sv_threshold,
                    scheme=opts.scheme, round_to=cfg.round_to, exclude=cfg.exclude, min_saving=opts.min_saving)]


@dataclass(frozen=True)
class Method:
    """A ``--method``: its options record and how it builds its passes; ``then``: may follow another method;
    ``require``: checks (and may complete) its options when it is part of the pipeline. ``sizes``: what sets how
    much goes (``"channels"``: --ratio of each group's channels; ``"budget"``: --ratio of the params / MACs budget;
    ``"weights"``: --ratio of the weights, zeroed, shapes kept; ``"rank"``: the rank options, no ratio);
    ``calibrated``: reads unlabelled calibration inputs (``calib``)."""

    name: str
    options: type[Options]
    build: Callable[["PruneConfig", Any, tuple[str, ...]], list[Pass]]
    then: bool = False
    require: Callable[[Any], Any] | None = None
    sizes: Literal["channels", "budget", "weights", "rank"] = "channels"
    calibrated: bool = False

    @property
    def help(self) -> str:
        return (self.build.__doc__ or "").strip().splitlines()[0]


METHODS: Mapping[str, Method] = {m.name: m for m in (
    Method("magnitude", NormOptions, magnitude, require=calib_needs_reconstruct("magnitude")),
    Method("random", RandomOptions, random, require=calib_needs_reconstruct("random")),
    Method("lowrank", LowRankOptions, lowrank, then=True, sizes="rank"),
    Method("sampling", SamplingOptions, sampling, sizes="budget", calibrated=True),
    Method("sipp", SiPPOptions, sipp, sizes="weights", calibrated=True),
    Method("bn_scale", NormOptions, bn_scale, require=calib_needs_reconstruct("bn_scale")),
    Method("taylor", TaylorOptions, taylor, require=require_labelled),
)}
THEN_METHODS = tuple(m.name for m in METHODS.values() if m.then)  # methods that may follow another one with --then


def option_fields() -> dict[str, dataclasses.Field]:
    """Every method option, by name (the first record that declares it gives its description)."""
    out: dict[str, dataclasses.Field] = {}
    for m in METHODS.values():
        for f in dataclasses.fields(m.options):
            out.setdefault(f.name, f)
    return out


def check_chain(method: str, then: tuple[str, ...]) -> None:
    """``--method`` and ``--then`` name known methods, each once, only then-able ones after the first."""
    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose one of {', '.join(sorted(METHODS))}")
    for name in then:
        if name not in THEN_METHODS:
            raise UsageError(f"--then {name}: only {', '.join(THEN_METHODS)} can follow another method")
    chain = (method, *then)
    if len(set(chain)) != len(chain):
        raise UsageError(f"method '{method}' appears twice in the pipeline {' -> '.join(chain)}")


def passes(cfg: "PruneConfig", exclude: tuple[str, ...] = ()) -> list[Pass]:
    """The passes of ``--method`` followed by those of every ``--then`` method (and the fold post-pass); ``exclude``:
    node names the analysis holds whole on top of the configured ones (the torch frontend's re-planning, with its
    own reason in the report)."""
    out = [p for name in (cfg.method, *cfg.then) for p in METHODS[name].build(cfg, cfg.options[name], exclude)]
    return out + [FoldBatchNorm()] if cfg.fold else out


def planning(cfg: "PruneConfig") -> list[Pass]:
    """The passes that decide which units go without changing the model (analysis, scoring, selection): those
    before the first pass that may change the model."""
    out = []
    for p in passes(cfg):
        if p.mutates:
            break
        out.append(p)
    return out

"""``--method`` presets: each name maps to the explicit list of passes it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from graphprune.config import PruneConfig
    from graphprune.passes import Pass


def channel_pipeline(score: "Pass", config: "PruneConfig") -> list["Pass"]:
    from graphprune.passes import AnalyseChannels, RemoveChannels, Select

    select = Select(ratio=config.ratio, scope=config.scope, threshold=config.threshold, round_to=config.round_to,
                    max_group_ratio=config.max_group_ratio)
    return [AnalyseChannels(exclude=config.exclude), score, select, RemoveChannels()]


def magnitude(config: "PruneConfig") -> list["Pass"]:
    from graphprune.passes import MagnitudeScore

    return channel_pipeline(MagnitudeScore(norm=config.norm), config)


def random(config: "PruneConfig") -> list["Pass"]:
    from graphprune.passes import RandomScore

    return channel_pipeline(RandomScore(seed=config.seed), config)


def lowrank(config: "PruneConfig") -> list["Pass"]:
    from graphprune.pipeline.stages import lowrank_passes

    return lowrank_passes(config)


def calibrate(config: "PruneConfig") -> "Pass":
    from graphprune.passes.calibrate import Calibrate

    return Calibrate(data=config.calib, max_points=config.max_points, seed=config.seed)


def sampling(config: "PruneConfig") -> list["Pass"]:
    """PFP: data-informed channel sensitivity, one ε for a params / MACs budget (passes/sampling.py)."""
    from graphprune.passes import AnalyseChannels, RemoveChannels
    from graphprune.passes.reweight import Reweight
    from graphprune.passes.sampling import SamplingSelect
    from graphprune.passes.sensitivity import SensitivityScore

    select = SamplingSelect(ratio=config.ratio, budget=config.budget, sampling=config.sampling, delta=config.delta,
                            round_to=config.round_to, seed=config.seed)
    passes = [calibrate(config), AnalyseChannels(exclude=config.exclude),
              SensitivityScore(max_points=config.max_points, seed=config.seed), select, RemoveChannels()]
    return passes + ([Reweight()] if config.sampling == "randomized" else [])


def sipp(config: "PruneConfig") -> list["Pass"]:
    """SiPP: zeroes weights (unstructured); shapes are NOT shrunk (passes/sipp.py)."""
    from graphprune.passes.sipp import SiPPSparsify

    return [calibrate(config), SiPPSparsify(ratio=config.ratio, mode=config.sipp_mode, delta=config.delta,
                                            max_points=config.max_points, exclude=config.exclude, seed=config.seed)]


def bn_scale(config: "PruneConfig") -> list["Pass"]:
    """Network slimming: |γ| of the BatchNormalization on each channel (passes/bn_scale.py)."""
    from graphprune.passes.bn_scale import BNScaleScore

    return channel_pipeline(BNScaleScore(norm=config.norm), config)


def taylor(config: "PruneConfig") -> list["Pass"]:
    """First-order Taylor |Σ activation × gradient| over labelled data; torch path only (passes/taylor.py)."""
    from graphprune.passes.taylor import TaylorScore

    return channel_pipeline(TaylorScore(calib=config.calib, loss=config.loss, max_points=config.max_points), config)


METHODS: dict[str, Callable[["PruneConfig"], list["Pass"]]] = {
    "magnitude": magnitude,
    "random": random,
    "lowrank": lowrank,
    "sampling": sampling,
    "sipp": sipp,
    "bn_scale": bn_scale,
    "taylor": taylor,
}

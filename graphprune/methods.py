"""``--method`` presets: each name maps to the explicit list of passes it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .config import PruneConfig
    from .passes import Pass


def channel_pipeline(score: "Pass", config: "PruneConfig") -> list["Pass"]:
    from .passes import AnalyseChannels, RemoveChannels, Select

    select = Select(ratio=config.ratio, scope=config.scope, threshold=config.threshold, round_to=config.round_to,
                    max_group_ratio=config.max_group_ratio)
    return [AnalyseChannels(exclude=config.exclude), score, select, RemoveChannels()]


def magnitude(config: "PruneConfig") -> list["Pass"]:
    from .passes import MagnitudeScore

    return channel_pipeline(MagnitudeScore(norm=config.norm), config)


def random(config: "PruneConfig") -> list["Pass"]:
    from .passes import RandomScore

    return channel_pipeline(RandomScore(seed=config.seed), config)


METHODS: dict[str, Callable[["PruneConfig"], list["Pass"]]] = {
    "magnitude": magnitude,
    "random": random,
}

"""Build the channel-dependency graph of the current model."""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.channels.analysis import analyse
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


@dataclass(frozen=True, kw_only=True)
class AnalyseChannels(Pass):
    """Run the channel rules; ``exclude`` (fnmatch patterns on node names) freezes what those nodes touch."""

    exclude: tuple[str, ...] = ()
    provides = ("channels",)

    def call(self, state: PruneState) -> PassResult:
        cg = analyse(state.source.graph, self.exclude)
        stats = {"groups": len(cg.candidates), "prunable": len(cg.prunable), "unmapped_ops": len(cg.unmapped)}
        return PassResult(state.with_(channels=cg), modified=False, stats=stats)

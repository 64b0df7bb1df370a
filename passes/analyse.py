"""Build the channel-dependency graph of the current model."""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.channels.analysis import ChannelGraph, analyse
from graphprune.errors import UnsupportedModelError
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState


def refuse_unmapped(cg: ChannelGraph) -> None:
    """``--strict``: an :class:`UnsupportedModelError` naming the ops that have no channel rule."""
    if cg.unmapped:
        ops = sorted({f"{n.op} ({n.source or n.name})" for n in cg.unmapped})
        raise UnsupportedModelError(f"--strict: no channel rule for {len(ops)} node(s): {', '.join(ops[:5])}"
                                    f"{' …' if len(ops) > 5 else ''}")


@dataclass(frozen=True, kw_only=True)
class AnalyseChannels(Pass):
    """Run the channel rules; ``exclude`` (fnmatch patterns on node names) freezes what those nodes touch, and so
    does ``held`` (exact node names the emitter asked to keep whole, with that reason);
    ``strict`` refuses a model with an op that has no channel rule; ``query_heads``: grouped-query attention loses
    query heads inside each KV group instead of whole groups (:func:`graphprune.channels.analysis.analyse`)."""

    exclude: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    strict: bool = False
    query_heads: bool = False
    provides = ("channels",)

    def call(self, state: PruneState) -> PassResult:
        cg = analyse(state.source.graph, self.exclude, held=self.held, query_heads=self.query_heads)
        if self.strict:
            refuse_unmapped(cg)
        stats = {"groups": len(cg.candidates), "prunable": len(cg.prunable), "unmapped_ops": len(cg.unmapped)}
        return PassResult(state.with_(channels=cg), modified=False, stats=stats)

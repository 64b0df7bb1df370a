"""Low-rank decomposition: replace each Conv / Gemm / MatMul with a constant weight, where that lowers MACs,
by two thinner ops (:mod:`graphprune.emit.lowrank`). Which layers, at which rank: :mod:`graphprune.methods.lowrank`.

What was decomposed (node, weight, scheme, rank) goes to the model's metadata (:mod:`graphprune.verify.metadata`)
and to the pass's claim, so the verifier rebuilds the truncated original from either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from graphprune.emit.lowrank import decompose_model
from graphprune.frontends.onnx.lower import to_ir
from graphprune.errors import UsageError
from graphprune.methods import lowrank as lr
from graphprune.methods.lowrank import OPS, Layer, Skipped, plan_layers
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify import metadata
from graphprune.verify.claims import Claim, TruncatedLayers


@dataclass(frozen=True, kw_only=True)
class LowRank(Pass):
    """Decompose Conv / Gemm / MatMul layers where that lowers MACs by at least ``min_saving`` of the layer's
    (default :data:`graphprune.methods.lowrank.DEFAULT_MIN_SAVING`: below it the extra op costs more latency than
    the MACs save). Rank: one of ``energy`` (default 0.9), ``rank_ratio``, ``sv_threshold``; rounded up to a
    multiple of ``round_to``. ``exclude``: fnmatch patterns on node names never decomposed.
    ``only_if_cheaper=False`` decomposes regardless of MACs (for tests)."""

    energy: float | None = None
    rank_ratio: float | None = None
    sv_threshold: float | None = None
    scheme: lr.Scheme = "channel"
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    ops: tuple[str, ...] = OPS
    only_if_cheaper: bool = True
    min_saving: float = lr.DEFAULT_MIN_SAVING
    mutates = True
    runs_on = frozenset({"onnx"})

    def __post_init__(self) -> None:
        if self.scheme not in ("channel", "spatial"):
            raise UsageError(f"scheme '{self.scheme}' must be 'channel' or 'spatial'")
        self.rule  # validates the rank options
        lr.check_min_saving(self.min_saving)

    @property
    def rule(self) -> lr.RankRule:
        return lr.RankRule(self.energy, self.rank_ratio, self.sv_threshold, self.round_to)

    def call(self, state: PruneState) -> PassResult:
        graph = state.source.graph if state.model is state.source.model else to_ir(state.model)
        layers, skipped = plan_layers(graph, self.rule, self.scheme, exclude=self.exclude, ops=self.ops,
                                      only_if_cheaper=self.only_if_cheaper, min_saving=self.min_saving)
        before = sum(layer.macs_before for layer in layers)
        after = sum(layer.macs_after for layer in layers)
        stats = {"rule": self.rule.describe, "scheme": self.scheme, "decomposed": [asdict(x) for x in layers],
                 "skipped": [asdict(s) for s in skipped], "below_min_saving": len(small(skipped)),
                 "min_saving": self.min_saving, "layer_macs_before": before, "layer_macs_after": after,
                 "notes": [summary(layers, skipped, self.rule, self.min_saving)]}
        if not layers:
            return PassResult(state, modified=False, stats=stats)
        model = metadata.write(decompose_model(state.model, layers), lowrank=layers)
        return PassResult(state.with_(model=model), modified=True, stats=stats)

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        """Rank r equals the truncated ``before`` (and full rank ``before`` itself)."""
        return TruncatedLayers(tuple(metadata.read(after.model).lowrank))


def small(skipped: list[Skipped]) -> list[Skipped]:
    """The layers skipped because their decomposition would save less than the minimum."""
    return [s for s in skipped if s.below_min_saving]


def summary(layers: list[Layer], skipped: list[Skipped], rule: lr.RankRule, min_saving: float) -> str:
    n_small = len(small(skipped))
    skips = f"{len(skipped)} skipped" + (f" ({n_small} would save < {min_saving:.0%} of their MACs)" if n_small else "")
    if not layers:
        return f"low rank ({rule.describe}): no layer decomposed; {skips}"
    ranks = ", ".join(f"{x.node} r={x.rank}/{x.full_rank}" for x in layers[:4]) + (" …" if len(layers) > 4 else "")
    return f"low rank ({rule.describe}): decomposed {len(layers)} layers ({ranks}); {skips}"

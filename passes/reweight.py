"""Randomized PFP reweighting: scale each kept channel's slice of its consumers' weights by count / (m p).

It runs *after* :class:`RemoveChannels`, on the pruned model, so verification stays two independent oracles:
the channel stage is checked against the masked original as for every channel method (the surgery does not
care how the kept channels were chosen), and this pass against the pruned model with exactly those weight
slices scaled, built as ``Mul`` nodes in the graph (:func:`graphprune.edits.verify_edits`). Scaling a
consumer's input slice commutes with masking, so together they equal "the masked, rescaled original",
while a bug in either step is reported by the stage that has it.

Only dense consumers are scaled: in a grouped (depthwise) conv an input channel feeds its own group only,
so there is no sum over sampled channels to keep unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.methods.edits import WeightEdit, apply_to_values
from graphprune.channels.rules import Space
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult
from graphprune.passes.sensitivity import group_layers


@dataclass(frozen=True, kw_only=True)
class Reweight(Pass):
    requires = ("channels", "plan")

    def call(self, state: PruneState) -> PassResult:
        factors = {int(g): np.asarray(f, np.float64) for g, f in state.plan.meta.get("reweight", {}).items()}
        if not factors:
            return PassResult(state, modified=False, stats={"scaled_weights": 0})
        cg, plan = state.channels, state.plan
        by_group = group_layers(cg)
        edits: dict[str, WeightEdit] = {}
        skipped = []
        for gid, factor in factors.items():
            group = cg.groups[gid]
            for layer in by_group.get(gid, []):
                if layer.groups != 1:
                    skipped.append(layer.node)
                    continue
                per_atom = factor[group.labels[Space(layer.x, layer.x_axis)]]
                kept = plan.kept(Space(layer.weight, layer.w_axis))
                if kept is not None:
                    per_atom = per_atom[kept]
                ndim = len(cg.graph.shape(layer.weight))
                shape = [1] * ndim
                shape[layer.w_axis] = len(per_atom)
                edit = WeightEdit(np.ones([1] * ndim, bool), per_atom.reshape(shape).astype(np.float32))
                if layer.weight in edits and not np.array_equal(edits[layer.weight].scale, edit.scale):
                    skipped.append(layer.node)  # a weight shared by consumers of different groups
                    continue
                edits[layer.weight] = edit
        model = apply_to_values(state.model, edits)
        stats = {"scaled_weights": len(edits), "unscaled_consumers": skipped,
                 "factor_range": [float(min(f.min() for f in factors.values())),
                                  float(max(f.max() for f in factors.values()))]}
        return PassResult(state.with_(model=model, weight_edits=edits), modified=True, stats=stats)

    def verify_stage(self, source, before: PruneState, after: PruneState, *, rtol: float, atol: float, seed: int):
        """This pass's oracle: ``after`` equals ``before`` with the recorded weight slices scaled."""
        from graphprune.methods.edits import verify_edits

        return verify_edits(before.model, after.model, after.weight_edits or {}, source.input_shapes,
                            interface=source.model, rtol=rtol, atol=atol, seed=seed)

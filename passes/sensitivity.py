"""PFP sensitivity scores (Liebenwein et al., ICLR 2020): how much each channel can matter, on data.

For every prunable group, its *consumers* are the Conv / Gemm / MatMul layers with a constant weight that
read one of the group's spaces as their input channels (or features). Each consumer gives every input atom
the sensitivity of :func:`graphprune.sensitivity.channel_sensitivity` (max over calibration points, output
units, patches and kernel positions of the relative contribution); an atom's unit takes the max over its
atoms (a Flatten block of features is one channel), and a unit read by several consumers takes the **max
across consumers**. Max, not sum, because the sensitivity is a supremum over output units: the consumers of
a unit together are one layer whose output units are the union of theirs, and its sensitivity is the max over
all of them. A sum would grow with the number of consumers (a residual stream read by five convs would
outrank one read by two) and leave the [0, 1] scale the sample-complexity bound relies on.

Groups with no such consumer (their channels only reach ops without constant weights) get no score; the
selection keeps them whole, and the stats list them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.methods.calib import batch_for, gather
from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.rules import Space
from graphprune.methods.sensitivity import DELTA_S, Layer, group_layers, points_needed, tracked
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


def neurons(layer: Layer, cg: ChannelGraph) -> int:
    """Output activations per point (filters × patches)."""
    w = cg.graph.value(layer.weight)
    filters = w.shape[0] if layer.op == "Conv" else w.shape[1 - layer.w_axis]
    return int(filters * layer.patches)


@dataclass(frozen=True, kw_only=True)
class SensitivityScore(Pass):
    """Unit score = PFP sensitivity, max over the group's consumers (see the module doc)."""

    max_points: int = 256
    batch_size: int = 32
    max_patches: int = 16  # patches per point and layer; 64 measured alike on digits at 4x the time (benchmarks/sampling_speed.py)
    delta_s: float = DELTA_S
    seed: int = 0
    progress: bool | None = None
    requires = ("channels", "calib")
    provides = ("scores",)
    runs_on = frozenset({"onnx", "torch"})

    def call(self, state: PruneState) -> PassResult:
        cg, graph = state.channels, state.channels.graph
        by_group = group_layers(cg)
        all_layers = [lay for ls in by_group.values() for lay in ls]
        eta = [neurons(lay, cg) for lay in all_layers] or [1]
        needed = points_needed(sum(eta), max(eta), self.delta_s)
        calib = state.calib.head(min(needed, self.max_points))
        trackers = tracked(all_layers, graph.value, lambda on_batch: gather(
            state.source.model, list(dict.fromkeys(lay.x for lay in all_layers)), calib, on_batch,
            input_shapes=state.source.input_shapes, batch_size=batch_for(graph, {lay.x for lay in all_layers}, self.batch_size),
            progress=self.progress, description="PFP sensitivity", access=state.frontend.access(state.source)),
            max_patches=self.max_patches, seed=self.seed)
        scores = {}
        tracker_of = {t.layer.node: t for t in trackers}
        for gid, ls in by_group.items():
            group = cg.groups[gid]
            unit = np.zeros(group.n_units)
            for lay in ls:
                labels = group.labels[Space(lay.x, lay.x_axis)]
                np.maximum.at(unit, labels, tracker_of[lay.node].channel.astype(np.float64))
            scores[gid] = unit
        unscored = [g.id for g in cg.prunable if g.id not in scores]
        notes = [f"sampling: sensitivities of {len(all_layers)} consumer layers from {calib.n_points} calibration points "
                 f"(the |S| bound asks for {needed})"]
        if unscored:
            notes.append(f"sampling: {len(unscored)} prunable group(s) feed no Conv/Gemm/MatMul with a constant weight; "
                         "they have no sensitivity and are kept whole")
        stats = {"points_bound": needed, "points_used": calib.n_points, "data_free": calib.data_free,
                 "layers": len(all_layers), "groups_scored": len(scores), "groups_unscored": unscored,
                 "combine": "max", "max_patches": self.max_patches, "notes": notes}
        return PassResult(state.with_(scores=scores), modified=False, stats=stats)

"""Weight edits: passes that change weight *values* without changing shapes (SiPP zeroing, PFP reweighting).

A :class:`WeightEdit` says, for one initializer, which entries are kept (the others become 0) and by how much
the kept ones are scaled. Passes apply edits to initializer values (:func:`apply_to_values`); verification
rebuilds the same change independently (:mod:`graphprune.verify.edits`), so a pass that zeroed or scaled the
wrong entries is caught by comparing outputs. :func:`reweight_edits` computes randomized PFP's scaling of the
consumers' input slices from the factors a plan records (the Reweight pass and ``graphprune verify`` both use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.errors import InternalError
from graphprune.methods.sensitivity import group_layers


@dataclass(frozen=True, eq=False)
class WeightEdit:
    """``keep``: bool array broadcastable to the weight (False → 0); ``scale``: float array broadcastable to it,
    or None for 1."""

    keep: np.ndarray
    scale: np.ndarray | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        out = values if self.scale is None else values * self.scale.astype(values.dtype)
        return np.where(self.keep, out, np.zeros((), values.dtype)).astype(values.dtype)

    def zeroed(self, shape: tuple[int, ...]) -> int:
        """How many entries of a weight of ``shape`` this edit sets to zero."""
        return int((~np.broadcast_to(self.keep, shape)).sum())


def apply_to_values(model: onnx.ModelProto, edits: Mapping[str, WeightEdit]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``edits`` hold the edited values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = set()
    for init in out.graph.initializer:
        if init.name in edits:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(edits[init.name].apply(values), init.name))
            found.add(init.name)
    missing = sorted(set(edits) - found)
    if missing:
        raise InternalError(f"weight edits name {missing[:3]}, which are not initializers of the model")
    return out


def with_values(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``values`` hold those arrays (reconstruction's refits)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(np.asarray(values[init.name]), init.name))
    return out


def sparsity(model: onnx.ModelProto, names) -> tuple[int, int]:
    """(zero entries, total entries) over the initializers ``names`` of ``model``."""
    names = set(names)
    zeros = total = 0
    for init in model.graph.initializer:
        if init.name in names:
            v = numpy_helper.to_array(init)
            zeros += int((v == 0).sum())
            total += int(v.size)
    return zeros, total




def reweight_edits(cg: ChannelGraph, plan: Plan) -> tuple[dict[str, WeightEdit], list[str]]:
    """Randomized PFP: each kept channel's slice of its dense consumers' weights scaled by the factor the plan
    records (``plan.meta["reweight"]``: group → factor per unit), as edits of the *pruned* weights; and the
    consumers left unscaled (grouped convs, whose input channel feeds its own group only; weights shared by
    consumers of different groups)."""
    factors = {int(g): np.asarray(f, np.float64) for g, f in plan.meta.get("reweight", {}).items()}
    by_group = group_layers(cg)
    edits: dict[str, WeightEdit] = {}
    skipped: list[str] = []
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
    return edits, skipped

"""Which channels to remove when the layers after them are refitted: structured Optimal Brain Surgeon.

A score (magnitude, PFP sensitivity) ranks a channel by what it contributes. When the consumers are refitted after
removal (:mod:`graphprune.methods.reconstruct`), what is lost is only what the *kept* channels cannot rebuild: a
channel that its neighbours duplicate costs nothing, however large. For one consumer ``y = x W`` (rows ``x`` of
its input on the calibration points, covariance ``H`` with the refit's ridge), removing the block ``c`` of input
rows (a channel's kernel positions) and refitting the rest by least squares raises the mean squared error by

    ΔE_c = tr(W_cᵀ [(H⁻¹)_cc]⁻¹ W_c)

and the optimal rest moves by ``δW_K = −(H⁻¹)_Kc [(H⁻¹)_cc]⁻¹ W_c`` (Hassibi & Stork 1993, per block, as
ZipLM and OBC apply it to structures). Each group keeps the *number* of units its method and budget chose (the
allocation, and so the budget met, is the method's); :func:`choose` picks which go, greedily in
:data:`STEPS` rounds: the units with the least Σ over the group's consumers of ΔE / that consumer's output
energy, then ``W`` and ``H⁻¹`` downdated by the block removed, so what the next round sees is what remains.

Consumers are those of :func:`graphprune.methods.sensitivity.group_layers` with one conv group (a grouped or
depthwise conv couples its input to its own output, which the pointwise conv after it then reads), no transA,
and at most :data:`MAX_ROWS` input rows (``H`` is ``D × D`` in float64); groups are taken in batches whose
covariances fit in :data:`MEMORY`, one calibration run each. A group none of whose consumers qualifies keeps the
method's choice; the stats say how many did.

Measured on the digits models with ``--reconstruct`` (``benchmarks/digits_reconstruct.py``): digits_resnet at 9 %
of its params 0.922 → 0.962 test accuracy with sampling, 0.904 → 0.944 with magnitude; where little is removed
within 3 of the 450 test points of the method's own choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.methods.calib import Calibration, batch_for, gather
from graphprune.methods.reconstruct import MAX_PATCHES, RIDGE, bias_slot, input_uses
from graphprune.methods.sensitivity import Layer, group_layers
from graphprune.workers import Workers

STEPS = 16  # rounds of removal per group, one downdate each (one unit per round: a downdate per unit removed)
MAX_ROWS = 2048  # input rows (channels × kernel positions) of a consumer considered; H is MAX_ROWS² float64 (32 MB)
MEMORY = 256 * 2**20  # bytes of covariances held at once; more consumers: another calibration run
ROWS_PER_UNKNOWN = 4  # a consumer is read only with this many calibration rows per input row: on fewer, a refit
# interpolates its points (Conv → Linear(1024 → 10) on 64 points chose units that lost 0.93 → 0.87 output cosine)


@dataclass(frozen=True)
class Consumer:
    """One consumer during the greedy choice: ``units`` (the group unit of each of its remaining input channels),
    ``kappa`` rows per channel, the weight ``w`` (rows, kept outputs) as refitted so far, ``hinv`` the inverse
    input covariance over the remaining rows, and ``energy`` its output's mean square (the cost's scale)."""

    units: np.ndarray
    kappa: int
    w: np.ndarray
    hinv: np.ndarray
    energy: float

    def costs(self, n_units: int) -> np.ndarray:
        """ΔE / energy of removing each of its remaining channels alone, summed per unit."""
        c, k = len(self.units), self.kappa
        blocks = self.hinv.reshape(c, k, c, k)[np.arange(c), :, np.arange(c), :]  # (c, k, k) diagonal blocks
        wc = self.w.reshape(c, k, -1)
        delta = np.einsum("cif,cij,cjf->c", wc, np.linalg.inv(blocks), wc, optimize=True)
        return np.bincount(self.units, weights=delta / self.energy, minlength=n_units)

    def without(self, gone: np.ndarray) -> "Consumer":
        """This consumer with the channels of units ``gone`` removed and the rest refitted (the OBS update)."""
        drop = np.isin(self.units, gone)
        if not drop.any():
            return self
        rows = np.repeat(drop, self.kappa)
        kept, out = ~rows, rows
        b = np.linalg.inv(self.hinv[np.ix_(out, out)])
        cross = self.hinv[np.ix_(kept, out)] @ b  # (H⁻¹)_Kc [(H⁻¹)_cc]⁻¹
        w = self.w[kept] - cross @ self.w[out]
        hinv = self.hinv[np.ix_(kept, kept)] - cross @ self.hinv[np.ix_(out, kept)]
        return Consumer(self.units[~drop], self.kappa, w, hinv, self.energy)


def qualifies(layer: Layer, cg: ChannelGraph) -> bool:
    if layer.groups != 1 or layer.trans_a:
        return False
    return layer.matrix(cg.graph.value(layer.weight)).shape[2] <= MAX_ROWS


def covariances(cg: ChannelGraph, model, layers: list[Layer], calib: Calibration, input_shapes, *,
                seeds: Mapping[str, int], access=None) -> dict[str, np.ndarray]:
    """Each layer's input-row covariance on the calibration points (centred where the layer has a place for an
    intercept, as the refit fits one there), with the refit's ridge on its diagonal; ``seeds[node]`` draws the
    layer's patches, so a layer's covariance does not depend on the others read in the same run. A layer with
    fewer than ``ROWS_PER_UNKNOWN`` rows per input row is left out."""
    g = cg.graph
    uses = input_uses(g)
    sums = {lay.node: [0, 0.0, 0.0] for lay in layers}
    rngs = {lay.node: np.random.default_rng(seeds[lay.node]) for lay in layers}
    by_input: dict[str, list[Layer]] = {}
    for lay in layers:
        by_input.setdefault(lay.x, []).append(lay)

    def add(lay: Layer, values: Mapping[str, np.ndarray]) -> None:
        rows = lay.rows(values[lay.x], rngs[lay.node], MAX_PATCHES)[:, 0].astype(np.float64)
        s = sums[lay.node]
        s[0], s[1], s[2] = s[0] + len(rows), s[1] + rows.sum(0), s[2] + rows.T @ rows

    by_cost = sorted(layers, key=lambda lay: lay.matrix(g.value(lay.weight)).shape[2] ** 2 * lay.patches, reverse=True)
    with Workers() as workers:  # a batch's layers side by side (each its own sums and generator)
        gather(model, list(by_input), calib, lambda values: workers.each(lambda lay: add(lay, values), by_cost),
               input_shapes=input_shapes, batch_size=batch_for(g, by_input, 32), description="refit-aware choice",
               access=access)
    out = {}
    for lay in layers:
        n, sx, sxx = sums[lay.node]
        if n < ROWS_PER_UNKNOWN * len(sxx):
            continue  # too few rows: the refit OBS predicts would interpolate them, so its ΔE is no guide
        h = sxx / max(n, 1)
        if bias_slot(g, g.node_by_name[lay.node], uses) is not None:
            mean = sx / max(n, 1)
            h = h - np.outer(mean, mean)
        d = len(h)
        out[lay.node] = h + RIDGE * max(np.trace(h) / d, 1e-12) * np.eye(d)
    return out


def consumer(cg: ChannelGraph, plan: Plan, gid: int, layer: Layer, h: np.ndarray) -> Consumer | None:
    """The layer as a :class:`Consumer` of group ``gid``: its weight at the output channels the plan keeps."""
    w = layer.matrix(cg.graph.value(layer.weight))[0].T.astype(np.float64)  # (rows, filters)
    y = cg.graph.node_by_name[layer.node].outputs[0]
    kept_y = plan.kept(Space(y, 1 if layer.op == "Conv" else len(cg.graph.shape(y)) - 1))
    if kept_y is not None:
        w = w[:, kept_y]
    energy = float(np.einsum("df,de,ef->", w, h, w))
    if energy <= 0 or not np.isfinite(energy):
        return None
    units = np.asarray(cg.groups[gid].labels[Space(layer.x, layer.x_axis)], np.int64)
    return Consumer(units, layer.kappa, w, np.linalg.inv(h), energy)


def choose(consumers: list[Consumer], n_units: int, count: int, steps: int = STEPS,
           spaces: Iterable[np.ndarray] = ()) -> np.ndarray:
    """The ``count`` units (sorted) whose removal the consumers' refits recover best, in ``steps`` greedy rounds.

    ``spaces``: the unit labels of each space of the group; every space keeps a unit, as the selection
    guarantees (a tensor never becomes empty): a space's last unit is never taken, and of a round's units that
    would together empty a space the costliest is given back (so fewer than ``count`` may go, as with
    the selection's own give-back)."""
    spaces = list(spaces)
    member = np.zeros((len(spaces), n_units), bool)
    for i, labels in enumerate(spaces):
        member[i, labels] = True
    gone = np.zeros(n_units, bool)
    per_round = max(1, -(-count // steps))
    while gone.sum() < count:
        cost = sum(c.costs(n_units) for c in consumers)
        alive = member & ~gone
        cost[gone | alive[alive.sum(1) == 1].any(0)] = np.inf  # removed, or the last unit of a space
        take = np.argsort(cost, kind="stable")[:min(per_round, count - int(gone.sum()))]
        take = take[np.isfinite(cost[take])]
        taken = np.zeros(n_units, bool)
        taken[take] = True
        for row in member[(alive & ~taken).sum(1) == 0]:  # spaces this round would empty: keep their costliest
            both = np.flatnonzero(row & taken)
            taken[both[np.argmax(cost[both])]] = False
        if not taken.any():
            break
        gone |= taken
        consumers = [c.without(np.flatnonzero(taken)) for c in consumers]
    return np.flatnonzero(gone)


def rows_of(layer: Layer, cg: ChannelGraph) -> int:
    return int(layer.matrix(cg.graph.value(layer.weight)).shape[2])


def batches(todo: Mapping[int, list[Layer]], cg: ChannelGraph, budget: int | None = None) -> list[dict[int, list[Layer]]]:
    """The groups in batches whose covariances (float64) fit in ``budget`` bytes together (default
    :data:`MEMORY`): one calibration run per batch, so memory stays bounded however many consumers there are."""
    budget = MEMORY if budget is None else budget
    out: list[dict[int, list[Layer]]] = [{}]
    used = 0
    for gid, ls in todo.items():
        size = sum(8 * rows_of(lay, cg) ** 2 for lay in ls)
        if out[-1] and used + size > budget:
            out.append({})
            used = 0
        out[-1][gid] = ls
        used += size
    return out


def refit_choice(cg: ChannelGraph, plan: Plan, model, calib: Calibration, input_shapes, *,
                 seed: int = 0, access=None) -> tuple[Plan, dict]:
    """``plan`` with each group's removed units re-chosen for the refit (counts unchanged), and the stats;
    ``access`` reads the model's activations (:class:`graphprune.methods.calib.OnnxAccess` when None)."""
    by_group = group_layers(cg)
    todo = {gid: [lay for lay in by_group.get(gid, []) if qualifies(lay, cg)] for gid in plan.removed}
    todo = {gid: ls for gid, ls in todo.items() if ls}
    seeds = {lay.node: seed + i for i, lay in enumerate(lay for ls in todo.values() for lay in ls)}
    removed, changed, chosen, too_few = dict(plan.removed), 0, 0, 0
    runs = batches(todo, cg) if todo else []
    for batch in runs:
        hs = covariances(cg, model, [lay for ls in batch.values() for lay in ls], calib, input_shapes, seeds=seeds,
                         access=access)
        too_few += sum(lay.node not in hs for ls in batch.values() for lay in ls)
        for gid, ls in batch.items():
            consumers = [c for lay in ls if lay.node in hs and (c := consumer(cg, plan, gid, lay, hs[lay.node]))]
            if not consumers:
                continue
            group = cg.groups[gid]
            new = choose(consumers, group.n_units, len(plan.removed[gid]), spaces=group.labels.values())
            changed += int(len(np.setdiff1d(new, plan.removed[gid])))
            removed[gid], chosen = new, chosen + 1
    stats = {"groups_chosen": chosen, "groups_kept_choice": len(plan.removed) - chosen, "units_changed": changed,
             "consumers": sum(len(ls) for ls in todo.values()), "consumers_too_few_rows": too_few,
             "calibration_runs": len(runs),
             "points": calib.n_points}
    return Plan.from_removed(cg, removed, dict(plan.meta) | {"chosen_for_refit": True}), stats

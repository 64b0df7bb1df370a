"""Layer-wise reconstruction after channel removal (He et al. 2017 / ThiNet least squares, FLAP bias compensation).

Removing input channels of a layer loses their contribution to its output. For each *consumer* of removed
channels (a Conv — grouped and depthwise included —, a Gemm or a MatMul with a constant weight), refit the pruned
weight ``W`` and an intercept ``b`` so the layer's output on calibration activations matches the original's:

    min_{W, b}  Σ_rows ‖y − x W − b‖² + λ ‖W − W₀‖²,      λ = ridge · mean(diag(Cov x))

per conv group, in closed form from centred moments accumulated over chunks of rows (numpy, float64; linear in the
calibration points, one ``(D × D)`` solve per group and ridge, batched over groups). ``x`` are the rows (im2col patches) of
the layer's *kept* input channels, ``y`` its original output at its kept output channels, ``W₀`` the
pruned weight (a strong ridge leaves the layer as removal left it).

* **the inputs** (``inputs="sequential"``, He et al.; ``"auto"``, the default, up to ``MAX_WAVES`` waves): layers are refitted in waves along the graph, each on
  the activations of the model as refitted so far, so a layer also absorbs what removal and the refits before it
  changed upstream (renormalised norms, the residual stream). A wave holds the layers that read nothing another
  refit changes (parallel branches), so the cost is two calibration runs per wave. ``"original"``: every
  layer at once from one run of the original, on its activations restricted to the kept channels: faster,
  weaker when much is removed (digits_resnet at 10 % of its params: 0.45 test accuracy against 0.92). Fitting all
  layers at once on the *pruned* model's activations is wrong (each learns to undo its predecessors' error, which
  their own refits then remove; measured 0.1 against 0.99), so that is not offered.
* **residual sums** (sequential inputs): a layer whose output reaches a residual ``Add`` alone (directly or through
  the BatchNormalization it feeds) fits the *sum*, not itself (He et al. 2017 §3.3): its target gets the other
  addend's error (original at the kept channels − the model refitted so far) over the BatchNorm's gain, so it
  also absorbs the shortcut's error. Only where the other addend is final when its wave runs (of two branches
  meeting at the ``Add``, the one refitted last absorbs the other's error). Where the other addend is itself
  written by a refitted layer (a downsampling block's shortcut conv, through its BatchNorm or none), the two are
  fitted **together**, one least-squares fit over both inputs' rows at the same positions with the sum as the
  target (:class:`Partner`): the sequential pair's solution is one of its candidates. digits_resnet at 9 % of its
  params: relative error at those sums 0.385 / 0.197 → 0.237 / 0.119 (magnitude), sampling's test accuracy
  0.969 → 0.973.
* **ReLU-aware** (:mod:`graphprune.methods.gated_refit`): a layer whose output reaches a ReLU or a Clip (ReLU6)
  alone (through its BatchNormalization, or through the residual sum it fits) is refitted to what the clamp
  passes, not to the values it clamps; the held-out points choose between that fit, the linear one and the pruned
  weights.
* **the intercept** goes where the model already has a place for it: the layer's bias input, else the
  BatchNormalization it feeds alone (``β += γ b / √(σ² + ε)``), else a constant ``Add`` it feeds alone. Without
  one, the weights are refitted without intercept (uncentred moments).
* **bias compensation only** (FLAP): a layer whose weight cannot be refitted (shared with another node, a
  transposed Gemm input, …) still gets ``b += W_removed · mean(x_removed)``, when it has a bias slot.
* **held-out points**: every ``HOLD_OUT``-th calibration point never joins a fit. The ridge pulls the weights
  towards the pruned ones, and of ``ridge · RIDGES`` the held-out points pick the strength that predicts them
  best; a refit that is not finite or predicts them no better than the plainly pruned weights is dropped
  (reported). A fit with more unknowns than rows (a classifier on few points) interpolates its points: judged
  in-sample it looked exact while it lost on fresh inputs.

The pass applies the refits only when they raise the whole model's output cosine to the original on the held-out
points (a layer fed through a normalisation renormalised over the kept channels sees inputs the original cannot
show it, and there a better fit per layer can be a worse whole: measured on a small attention block,
0.92 → 0.82). Nothing is written to the model here: the pass applies the new values, and its oracle is the masked
original with exactly those values in place (:mod:`graphprune.verify.refit`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import numpy as np
from graphprune import progress as bars
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.ir import Graph
from graphprune.methods.calib import OnnxAccess, batch_for
from graphprune.methods.gated_refit import Gate, GatedRows, gated_error, gated_fit, thresholds
from graphprune.methods.sensitivity import Layer, layer_of
from graphprune.points import rows_per_point
from graphprune.workers import Workers

RIDGE = 1e-3  # λ relative to the mean input variance: enough to make a rank-deficient fit well posed
RECONSTRUCT_POINTS = 512  # calibration points a refit reads at most: digits_resnet at 9 % of its params gained 0.015
# test accuracy from 256 to 512 points; the fit's cost is linear in them
MAX_PATCHES = 32  # rows per point and layer (conv positions, MatMul rows), drawn once per batch, seeded


@dataclass(frozen=True)
class BiasSlot:
    """Where a layer's intercept goes: ``kind`` "bias" (the layer's own bias input), "bn" (the scale ``gain`` of
    the BatchNormalization it feeds: ``β += gain · b``) or "add" (a constant added to its output); ``name``: the
    initializer (pruned model) that receives it."""

    kind: Literal["bias", "bn", "add"]
    name: str
    gain: np.ndarray | None = None


@dataclass(frozen=True)
class Residual:
    """The layer's output reaches an ``Add`` (through the BatchNormalization it feeds alone, if any) whose other
    input ``other`` is another activation: a residual sum. ``gain`` (kept channels) is the per-channel factor
    from the layer's output to the sum (the BatchNorm's γ / √(σ² + ε), else 1)."""

    other: str
    other_axis: int
    gain: np.ndarray


@dataclass(frozen=True)
class Partner:
    """The layer writing a residual sum's other addend (directly or through its BatchNormalization), refitted in
    one least-squares fit with the target: the sum is linear in both weights. In the target's output space its
    output enters times ``ratio`` (its gain over the target's, per kept channel); ``offset`` is its addend's
    value where its weights contribute nothing (its current intercept through its BatchNorm)."""

    target: "Target"
    ratio: np.ndarray
    offset: np.ndarray
    bias: np.ndarray  # its current intercept (0 where it goes to its BatchNorm): held as it is

    def joint_gate(self, gate: Gate | None) -> Gate | None:
        """The target's gate behind the sum with this addend fitted in: a threshold per channel, no longer per row."""
        if gate is None:
            return None
        return Gate(gate.tau - self.offset / gate.gain, gate.gain, gate.lo, gate.hi, False)


@dataclass(frozen=True)
class Target:
    """One consumer to reconstruct: its layer in the *pruned* graph, its output name, the original channels of
    its input and output that were kept (None: all), and where its intercept goes."""

    layer: Layer
    y: str
    kept_x: np.ndarray | None
    kept_y: np.ndarray | None
    slot: BiasSlot | None
    refit: bool  # False: bias compensation only
    removed_x: np.ndarray | None = None  # bias compensation: the original input channels that were removed
    residual: Residual | None = None  # fit the residual sum, not the layer alone (sequential inputs only)
    kept_other: np.ndarray | None = None  # the original channels of ``residual.other`` that were kept
    gate: Gate | None = None  # the ReLU the output (or its residual sum) reaches: a ReLU-aware refit
    partner: Partner | None = None  # the other addend's layer, fitted with this one (sequential inputs only)


@dataclass(frozen=True)
class Refit:
    """The new values of one layer (pruned shapes), its calibration error before and after (relative to the
    target's energy; on the held-out points when ``held_out``), what was done: "refit", "bias" (compensation
    only) or "kept" (refit rejected), and the ridge the refit used."""

    node: str
    values: Mapping[str, np.ndarray]
    error_before: float
    error_after: float
    how: str
    ridge: float | None = None
    held_out: bool = False
    relu_aware: bool = False  # fitted to what the ReLU after it passes (:mod:`graphprune.methods.gated_refit`)


def input_uses(g: Graph) -> dict[str, int]:
    """How many node inputs read each tensor (a weight read twice is shared: no refit, no intercept slot)."""
    uses: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    return uses


def targets(original: Graph, pruned: Graph, plan: Plan) -> list[Target]:
    """Every layer of ``pruned`` that lost input channels, with what its refit needs."""
    by_node = {n.name: n for n in original.nodes}
    uses = input_uses(pruned)
    out = []
    for node in pruned.nodes:
        layer = layer_of(pruned, node)
        y = node.outputs[0]
        if layer is None or node.name not in by_node or original.shape(layer.x) is None or original.shape(y) is None:
            continue  # (a torch module captured again names what it computes after the original's nodes)
        kept_x = plan.kept(Space(layer.x, layer.x_axis))
        if kept_x is None:
            continue
        y_axis = 1 if layer.op == "Conv" else len(original.shape(y)) - 1
        n_in = original.shape(layer.x)[layer.x_axis]
        removed = np.setdiff1d(np.arange(n_in), kept_x)
        scaled = node.op == "Gemm" and (float(node.attr("alpha", 1.0)) != 1.0 or float(node.attr("beta", 1.0)) != 1.0)
        if layer.trans_a or scaled:
            continue  # Gemm with transA / alpha / beta: rows and intercept mean something else; left as pruned
        refit = uses.get(layer.weight, 0) == 1  # a weight shared with another node: bias compensation only
        residual = residual_of(pruned, node, y_axis)
        kept_other = plan.kept(Space(residual.other, residual.other_axis)) if residual else None
        gate = gate_of(pruned, y, through_add=residual is not None) if refit else None
        out.append(Target(layer, y, kept_x, plan.kept(Space(y, y_axis)), bias_slot(pruned, node, uses), refit,
                          removed, residual, kept_other, gate))
    return [with_partner(pruned, t, out) for t in out]


def with_partner(g: Graph, t: Target, todo: list[Target]) -> Target:
    """``t`` with the :class:`Partner` of its residual sum, where the other addend is written by another refitted
    layer of the same kind (Conv with Conv, ungrouped, rows at the same output positions; Gemm with Gemm), through
    a constant BatchNormalization or none, and keeps the same channels; else ``t`` as it was."""
    res = t.residual
    if res is None or not t.refit or t.slot is None or t.layer.groups != 1 or t.layer.op not in ("Conv", "Gemm"):
        return t
    gain, writer = np.ones_like(res.gain), g.producers.get(res.other)
    mean = beta = np.zeros_like(res.gain)
    if writer is not None and (bn := bn_affine(g, writer, writer.inputs[0])) is not None:
        (gain, beta, mean), writer = bn, g.producers.get(writer.inputs[0])
    other = next((o for o in todo if writer is not None and o.layer.node == writer.name), None)
    if (other is None or not other.refit or other.layer.op != t.layer.op or other.layer.groups != 1
            or sole_reader(g, other.y) is None
            or (t.layer.op == "Conv" and other.layer.out_spatial != t.layer.out_spatial)
            or not np.array_equal(*(k if k is not None else np.arange(len(gain)) for k in (other.kept_y, t.kept_y)))):
        return t
    slot = {other.slot.name: g.value(other.slot.name)} if other.slot else {}
    own = current_bias(other, slot, (1, 0, len(gain))).reshape(-1)
    return dataclasses.replace(t, partner=Partner(other, gain / res.gain, beta + gain * (own - mean), own))


def without_residual(t: Target) -> Target:
    """``t`` fitting its own output: no residual sum, and no gate that lies behind one."""
    gate = None if t.gate is not None and t.gate.residual else t.gate
    return dataclasses.replace(t, residual=None, kept_other=None, gate=gate, partner=None)


def gate_of(g: Graph, y: str, through_add: bool) -> Gate | None:
    """The :class:`~graphprune.methods.gated_refit.Gate` of the layer writing ``y`` (kept channels): ``y`` →
    [constant BatchNormalization] → [Add, when ``through_add``] → Relu or Clip with constant bounds, each the sole
    reader of what comes before; None for any other path."""
    nxt, width = sole_reader(g, y), (g.shape(y) or (0, 0))[1]
    gain, tau = np.ones(width), np.zeros(width)
    if nxt is not None and (bn := bn_affine(g, nxt, y)) is not None:  # else a BN stays nxt, which is no clamp
        gain, beta, mean = bn
        tau = mean - beta / gain
        nxt = sole_reader(g, nxt.outputs[0])
    if through_add:
        nxt = sole_reader(g, nxt.outputs[0]) if nxt is not None and nxt.op == "Add" else None
    bounds = clamp_bounds(g, nxt)
    if bounds is None or len(gain) != width or np.any(gain == 0):
        return None
    return Gate(tau, gain, *bounds, through_add)


def clamp_bounds(g: Graph, node) -> tuple[float, float] | None:
    """(lo, hi) of a Relu (0, ∞) or a Clip with constant bounds (inputs from opset 11, attributes before); None
    for any other node or a Clip that clamps nothing."""
    if node is None or node.op not in ("Relu", "Clip"):
        return None
    if node.op == "Relu":
        return 0.0, np.inf
    given = (node.input(1), node.input(2))
    if any(name is not None and not g.is_const(name) for name in given):
        return None
    lo, hi = (float(np.asarray(g.value(name)).reshape(-1)[0]) if name is not None else float(node.attr(key, default))
              for name, key, default in zip(given, ("min", "max"), (-np.inf, np.inf)))
    return (lo, hi) if np.isfinite(lo) or np.isfinite(hi) else None


def residual_of(g: Graph, node, y_axis: int) -> Residual | None:
    """The residual sum ``node``'s output reaches alone, directly or through one BatchNormalization with constant
    statistics (see :class:`Residual`), or None."""
    y = node.outputs[0]
    gain = np.ones(g.shape(y)[y_axis])
    nxt = sole_reader(g, y)
    if nxt is not None and (bn := bn_gain(g, nxt, y)) is not None:
        gain, y = bn, nxt.outputs[0]
        nxt = sole_reader(g, y)
    if nxt is None or nxt.op != "Add" or len(nxt.inputs) != 2 or nxt.inputs[0] == nxt.inputs[1]:
        return None
    other = nxt.inputs[1] if nxt.inputs[0] == y else nxt.inputs[0]
    if g.is_const(other) or g.shape(other) != g.shape(y) or np.any(np.abs(gain) < 1e-12):
        return None
    return Residual(other, y_axis, gain)


def sole_reader(g: Graph, y: str):
    """The one node reading ``y``, or None (several, none, or ``y`` is a graph output)."""
    readers = g.consumers.get(y, ())
    return readers[0] if len(readers) == 1 and y not in g.outputs else None


def bn_gain(g: Graph, bn, y: str) -> np.ndarray | None:
    """γ / √(σ² + ε) of a BatchNormalization normalising ``y`` with constant scale and variance, or None."""
    if bn.op != "BatchNormalization" or bn.inputs[0] != y or len(bn.inputs) < 5:
        return None
    scale, _, _, var = bn.inputs[1:5]
    if not (g.is_const(scale) and g.is_const(var)):
        return None
    eps = float(bn.attr("epsilon", 1e-5))
    return g.value(scale).astype(np.float64) / np.sqrt(g.value(var).astype(np.float64) + eps)


def bn_affine(g: Graph, bn, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(γ / √(σ² + ε), β, μ) of a BatchNormalization normalising ``y`` whose four parameters are constants, or
    None: its output is ``gain · (y − μ) + β``."""
    gain = bn_gain(g, bn, y)
    if gain is None or not (g.is_const(bn.inputs[2]) and g.is_const(bn.inputs[3])):
        return None
    return gain, g.value(bn.inputs[2]).astype(np.float64), g.value(bn.inputs[3]).astype(np.float64)


def bias_slot(g: Graph, node, uses: Mapping[str, int]) -> BiasSlot | None:
    """Where ``node``'s intercept can go (see :class:`BiasSlot`), or None."""
    y = node.outputs[0]
    if len(node.inputs) > 2 and node.inputs[2] and g.is_const(node.inputs[2]) and uses.get(node.inputs[2]) == 1:
        width = g.shape(y)[1 if node.op == "Conv" else -1]
        return BiasSlot("bias", node.inputs[2]) if g.value(node.inputs[2]).size == width else None
    nxt = sole_reader(g, y)
    if nxt is None:
        return None
    if (gain := bn_gain(g, nxt, y)) is not None:
        bias = nxt.inputs[2]
        if g.is_const(bias) and uses.get(bias) == 1:
            return BiasSlot("bn", bias, gain)
    if nxt.op == "Add" and node.op != "Conv":
        other = nxt.inputs[1] if nxt.inputs[0] == y else nxt.inputs[0]
        if g.is_const(other) and uses.get(other) == 1 and g.shape(other) == g.shape(y)[-1:]:
            return BiasSlot("add", other)
    return None


class Moments:
    """Running sums of one layer's rows ``x`` (R, G, D) and targets ``y`` (R, G, F), in float64."""

    def __init__(self, groups: int, d: int, f: int):
        self.n = 0
        self.sx, self.sy = np.zeros((groups, d)), np.zeros((groups, f))
        self.xx, self.xy = np.zeros((groups, d, d)), np.zeros((groups, d, f))
        self.yy = np.zeros(groups)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += np.einsum("rgd,rge->gde", x, x, optimize=True)
        self.xy += np.einsum("rgd,rgf->gdf", x, y, optimize=True)
        self.yy += np.einsum("rgf,rgf->g", y, y)

    def error(self, w: np.ndarray, b: np.ndarray) -> float:
        """Mean ‖y − x w − b‖² over rows (summed over groups), from the moments; ``w`` (G, D, F), ``b`` (G, F)."""
        n = max(self.n, 1)
        xw = np.einsum("gdf,gde,gef->", w, self.xx, w) / n
        cross = np.einsum("gdf,gdf->", w, self.xy) / n
        mx, my = self.sx / n, self.sy / n
        return float(self.yy.sum() / n - 2 * cross + xw - 2 * np.einsum("gf,gf->", b, my)
                     + 2 * np.einsum("gd,gdf,gf->", mx, w, b) + np.einsum("gf,gf->", b, b))

    def energy(self) -> float:
        return float(self.yy.sum() / max(self.n, 1))

    def shifted(self, dy: np.ndarray, dxy: np.ndarray) -> "Moments":
        """These moments with every target moved by a change whose sum is ``dy`` (G, F) and whose products with
        the rows sum to ``dxy`` (G, D, F): what a solve on the moved targets needs (``yy`` is left as it was)."""
        out = Moments.__new__(Moments)
        out.n, out.sx, out.xx, out.yy = self.n, self.sx, self.xx, self.yy
        out.sy, out.xy = self.sy + dy, self.xy + dxy
        return out

    def solve(self, ridge: float, intercept: bool, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ridge least squares: (w (G, D, F), b (G, F)); b is 0 without ``intercept``. The ridge pulls ``w``
        towards ``prior`` (G, D, F; zero when None): ``(Cxx + λI) w = Cxy + λ prior``."""
        n = max(self.n, 1)
        mx, my = self.sx / n, self.sy / n
        cxx, cxy = self.xx / n, self.xy / n
        if intercept:
            cxx = cxx - mx[:, :, None] * mx[:, None, :]
            cxy = cxy - mx[:, :, None] * my[:, None, :]
        d = cxx.shape[1]
        lam = ridge * np.maximum(np.trace(cxx, axis1=1, axis2=2) / d, 1e-12)
        rhs = cxy if prior is None else cxy + lam[:, None, None] * prior
        w = np.linalg.solve(cxx + lam[:, None, None] * np.eye(d), rhs)
        b = my - np.einsum("gd,gdf->gf", mx, w) if intercept else np.zeros_like(my)
        return w, b


class Accumulator:
    """One target's moments, fed batch by batch with the activations of its input and its original output: the
    rows of the fitted points and of the held-out ones (:func:`held_out`) apart."""

    def __init__(self, target: Target, weight: np.ndarray, seed: int, n_points: int = 0,
                 partner_weight: np.ndarray | None = None):
        self.target = target
        self.w0 = target.layer.matrix(weight).transpose(0, 2, 1).astype(np.float64)  # (G, D, F)
        self.own = self.w0.shape[1]  # the target's own columns; a partner's follow them
        p, self.gate = target.partner, target.gate
        if p is not None:  # one fit over both addends' rows: the partner's weights enter times its ratio
            w1 = p.target.layer.matrix(partner_weight).transpose(0, 2, 1).astype(np.float64) * p.ratio
            self.w0 = np.concatenate([self.w0, w1], axis=1)
            self.gate = p.joint_gate(target.gate)
        g, d, f = self.w0.shape
        self.fit, self.held = Moments(g, d, f), Moments(g, d, f)
        self.rng = np.random.default_rng(seed)
        self.gated = GatedRows(n_points, np.random.default_rng(seed + 1)) if self.gate else None
        self.removed_mean: np.ndarray | None = None  # bias compensation: mean of the removed input channels
        self.points = 0

    def add(self, x: np.ndarray, y: np.ndarray, x_full: np.ndarray | None = None,
            shift: np.ndarray | None = None, held: np.ndarray | None = None, other: np.ndarray | None = None,
            partner: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """``x``: the layer's input with the kept channels only; ``y``: the original output (all channels);
        ``shift``: added to ``y`` at the kept channels (the other addend's error of a residual sum); ``held``: per
        point of the batch, whether it is held out (rows are point-major when axis 0 is the point axis; a layer
        whose tensors are laid out otherwise fits on every point); ``other``: a residual sum's other addend in
        the model refitted so far, in the layer's output space (a gate behind the sum reads it); ``partner``:
        the partner's input (model refitted so far) and original output (all channels)."""
        t = self.target
        y_axis = 1 if t.layer.op == "Conv" else y.ndim - 1
        if t.kept_y is not None:
            y = np.take(y, t.kept_y, axis=y_axis)
        if shift is not None:
            y = y + shift
        rows, pos = t.layer.rows_at(x, self.rng, MAX_PATCHES)
        if partner is not None:
            rows, y = self.with_partner_rows(rows, pos, y, y_axis, *partner)
        groups = self.w0.shape[0]
        out = target_rows(t.layer, y, pos, groups)
        mask = np.zeros(len(rows), bool)
        if held is not None and held.any() and not len(rows) % len(held) \
                and rows_per_point(x, len(held)) and rows_per_point(y, len(held)):  # rows point after point
            mask = np.repeat(held, len(rows) // len(held))
        if mask.any():
            self.fit.add(rows[~mask], out[~mask])
            self.held.add(rows[mask], out[mask])
        else:
            self.fit.add(rows, out)
        if self.gated is not None:
            side = target_rows(t.layer, other, pos, groups) if other is not None and partner is None else None
            self.gated.add(rows, out, thresholds(self.gate, out.shape, side), mask, len(x))
        if x_full is not None and t.removed_x is not None and len(t.removed_x):
            axis = t.layer.x_axis
            moved = np.moveaxis(np.take(x_full, t.removed_x, axis=axis), axis, -1)
            total = moved.reshape(-1, len(t.removed_x)).astype(np.float64).sum(0)
            count = moved.size // len(t.removed_x)
            self.removed_mean = total if self.removed_mean is None else self.removed_mean + total
            self.points += count

    def with_partner_rows(self, rows, pos, y, y_axis, x1, y1):
        """The rows with the partner's at the same points and positions appended, and the target ``y`` with the
        partner's original output added in the target's space (less its held intercept): the sum to fit."""
        p = self.target.partner
        lay = p.target.layer
        more = lay.conv_rows(np.asarray(x1, np.float32), pos) if lay.op == "Conv" else lay.rows_at(x1)[0]
        if p.target.kept_y is not None:
            y1 = np.take(y1, p.target.kept_y, axis=y_axis)
        shape = [1] * y.ndim
        shape[y_axis] = -1
        y = (y + p.ratio.reshape(shape) * (y1 - p.bias.reshape(shape))).astype(np.float32)
        return np.concatenate([rows, more], axis=2), y


HOLD_OUT = 8  # every HOLD_OUT-th calibration point is held out: it judges the refits and never joins a fit


def held_out(n_points: int, start: int = 0) -> np.ndarray:
    """Which of the points ``start … start + n_points − 1`` are held out (bool)."""
    return np.arange(start, start + n_points) % HOLD_OUT == HOLD_OUT - 1


def target_rows(layer: Layer, y: np.ndarray, pos: np.ndarray | None, groups: int) -> np.ndarray:
    """The output rows (R, G, F) matching :meth:`Layer.rows_at`'s input rows (same points and positions)."""
    y = np.asarray(y, np.float32)
    if layer.op == "Gemm":
        return y.reshape(y.shape[0], 1, -1)
    if layer.op == "MatMul":
        per_point = y.reshape(-1, layer.patches, y.shape[-1])
        if pos is not None:
            per_point = per_point[:, pos]
        return per_point.reshape(-1, 1, y.shape[-1])
    b, o = y.shape[:2]
    flat = y.reshape(b, o, -1)
    if pos is not None:
        flat = flat[:, :, pos]
    return np.ascontiguousarray(np.moveaxis(flat, 2, 1)).reshape(-1, groups, o // groups)


RIDGES = 10.0 ** np.arange(6)  # the multiples of the ridge the held-out points choose among (1e-3 … 100)


def solve(acc: Accumulator, weights: Mapping[str, np.ndarray], original: Graph, ridge: float) -> tuple[Refit, ...]:
    """The new values of ``acc``'s layer (weight and intercept slot; and its partner's weight, fitted with it), or
    the pruned ones when the refit does not predict the held-out points better.

    The ridge pulls the weights towards the pruned ones, so its strength moves from the least-squares fit to the
    layer as removal left it: fitted on the other points, each of ``ridge · RIDGES`` is judged on the held-out
    points, and a refit no better there than the pruned weights is dropped. A fit with more unknowns than rows
    interpolates its points: in-sample it is exact, out of sample it can be worse than no refit (Conv →
    Linear(1024 → 10) on 64 points: output cosine 0.91 → 0.75 on fresh inputs, reported 1.0 in-sample before
    this). The held-out points never join the fit, so the whole model can be judged on them too (the pass's
    output cosine), and a later wave's layers, fitted on the model refitted so far, see them as unseen inputs.
    Without held-out points (fewer than ``HOLD_OUT``), ``ridge`` alone, judged in-sample."""
    t, fit, held = acc.target, acc.fit, acc.held
    judge = held if held.n else fit  # errors are out of sample where there are held-out points
    slot = t.slot
    current_b = current_bias(t, weights, acc.w0.shape)
    energy = max(judge.energy(), 1e-30)
    before = judge.error(acc.w0, current_b) / energy
    layer = t.layer
    nodes = (layer.node,) + ((t.partner.target.layer.node,) if t.partner is not None else ())
    if not t.refit:
        return (compensate(acc, weights, original, before),)
    intercept = slot is not None
    (w, b), error, chosen = ridge_path(fit, judge, np.unique(ridge * RIDGES) if held.n else [ridge], intercept,
                                       acc.w0)
    error /= energy
    relu_aware = False
    if np.isfinite(error) and (rows := acc.gated and acc.gated.stacked(held=False)) is not None:
        judged = acc.gated.stacked(held=True) or rows  # after the ReLU, on the held-out rows where there are
        aware = gated_fit(fit, rows, acc.gate, w, b, chosen, intercept, acc.w0, acc.gated.rate)
        fits = [(acc.w0, current_b), (w, b), aware]
        errors = [gated_error(judged, acc.gate, *f) for f in fits]
        pick = int(np.nanargmin(errors)) if np.isfinite(errors).any() else 0
        if pick == 0:  # the pruned weights pass through the ReLU best
            return tuple(Refit(n, {}, before, before, "kept") for n in nodes)
        (w, b), relu_aware = fits[pick], pick == 2
        error = judge.error(w, b) / energy
    elif not np.isfinite(error) or error >= before:
        return tuple(Refit(n, {}, before, before, "kept") for n in nodes)
    values = {layer.weight: unmatrixed(layer, w[:, :acc.own], weights)}
    if slot is not None:
        values[slot.name] = with_intercept(slot, weights[slot.name], (b - current_b).reshape(-1))
    done = (float(error), "refit", float(chosen), held.n > 0, relu_aware)
    refits = (Refit(layer.node, values, before, *done),)
    if t.partner is not None:  # its columns, back from the target's output space
        lay = t.partner.target.layer
        refits += (Refit(lay.node, {lay.weight: unmatrixed(lay, w[:, acc.own:] / t.partner.ratio, weights)},
                         before, *done),)
    return refits


def unmatrixed(layer: Layer, w: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """A fitted (G, D, F) matrix as ``layer``'s weight, in its shape and dtype."""
    old = weights[layer.weight]
    return layer.unmatrix(w.transpose(0, 2, 1), old.shape).astype(old.dtype)


def ridge_path(fit: Moments, judge: Moments, ridges, intercept: bool, prior: np.ndarray):
    """The fit on ``fit`` with the ridge (of ``ridges``, ascending) whose error on ``judge`` is least, that error and
    the ridge. The error along the path falls while the fit over-reads its points and rises once the pull towards
    ``prior`` outweighs the data, so the walk stops at the first rise: two solves where the data determine the fit."""
    best = ((None, None), np.inf, None)
    for r in ridges:
        w, b = fit.solve(r, intercept, prior=prior)
        error = judge.error(w, b) if np.isfinite(w).all() and np.isfinite(b).all() else np.inf
        if error < best[1]:
            best = ((w, b), error, r)
        elif best[2] is not None:
            break  # the first rise after a finite fit
    return best


def current_bias(t: Target, weights: Mapping[str, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    """The intercept the pruned layer already adds to its output (G, F), as seen before the slot's gain."""
    g, _, f = shape
    slot = t.slot
    if slot is None or slot.kind == "bn":
        return np.zeros((g, f))  # a BN's β is applied after the fitted output: it is part of the target's path
    return weights[slot.name].astype(np.float64).reshape(g, f)


def with_intercept(slot: BiasSlot, values: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The slot's values after adding ``delta`` (the change of the layer's output intercept)."""
    if slot.kind == "bn":
        return (values.astype(np.float64) + slot.gain * delta).astype(values.dtype)
    return (values.astype(np.float64) + delta.reshape(values.shape)).astype(values.dtype)


def compensate(acc: Accumulator, weights: Mapping[str, np.ndarray], original: Graph, before: float) -> Refit:
    """FLAP bias compensation: the removed inputs' mean contribution, ``W_removed · mean(x_removed)``, added to the
    intercept (the only change when the weight itself cannot be refitted; dense layers with a bias slot only)."""
    t, lay = acc.target, acc.target.layer
    if t.slot is None or acc.removed_mean is None or lay.groups != 1:
        return Refit(lay.node, {}, before, before, "kept")
    mean = acc.removed_mean / max(acc.points, 1)
    w = np.take(original.value(lay.weight), t.removed_x, axis=lay.w_axis).astype(np.float64)
    out_axis = 0 if lay.op == "Conv" else 1 - lay.w_axis
    if t.kept_y is not None:
        w = np.take(w, t.kept_y, axis=out_axis)
    if lay.op == "Conv":
        w = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)  # every kernel position sees the channel's mean
    delta = np.moveaxis(w, out_axis, 0) @ mean
    values = {t.slot.name: with_intercept(t.slot, weights[t.slot.name], delta)}
    return Refit(lay.node, values, before, float("nan"), "bias")


def summary(refits: Iterable[Refit]) -> dict:
    """Counts and the median relative calibration error before / after, for the report."""
    refits = list(refits)
    done = [r for r in refits if r.how == "refit"]
    med = (lambda xs: float(np.median(xs)) if xs else None)
    return {"layers": len(refits), "refitted": len(done), "relu_aware": sum(r.relu_aware for r in done),
            "bias_only": sum(r.how == "bias" for r in refits),
            "rejected": sum(r.how == "kept" for r in refits),
            "median_error_before": med([r.error_before for r in done]),
            "median_error_after": med([r.error_after for r in done]),
            "errors_on": "held-out points" if done and all(r.held_out for r in done) else "calibration points",
            "median_ridge": med([r.ridge for r in done])}


def reconstruct(original: Graph, original_model, pruned_model, plan: Plan, calib, input_shapes, *,
                inputs: Literal["auto", "sequential", "original"] = "auto", ridge: float = RIDGE, seed: int = 0,
                progress: bool | None = None, access=None) -> tuple[list[Refit], str]:
    """Refit every consumer of removed channels of ``pruned_model`` (see the module docstring). ``calib``: a
    :class:`graphprune.methods.calib.Calibration`; the returned refits hold the new values, nothing is applied.
    ``inputs``: "sequential" (wave by wave on the model refitted so far), "original" (all at once from the
    original's activations), "auto": sequential up to ``MAX_WAVES`` waves. Also returns the inputs used.
    ``access`` reads the models (:class:`graphprune.methods.calib.OnnxAccess` when None)."""
    access = access or OnnxAccess(input_shapes)
    pruned = access.ir(pruned_model)
    todo = targets(original, pruned, plan)
    if not todo:
        return [], inputs
    weights = {name: t.value for name, t in pruned.params.items()}
    waves = dependency_waves(pruned, todo)
    if inputs == "auto":
        inputs = "sequential" if len(waves) <= MAX_WAVES else "original"
    sequential = inputs == "sequential"
    if not sequential:
        waves = [[without_residual(t) for t in todo]]  # no refit state to sum with
    model, refits = pruned_model, []
    for k, wave in enumerate(bars.track(waves, "reconstructing", total=len(waves), progress=progress)):
        accs = [Accumulator(t, weights[t.layer.weight], seed + len(refits) + i, calib.n_points,
                            weights[t.partner.target.layer.weight] if t.partner is not None else None)
                for i, t in enumerate(wave)]
        with Workers() as workers:  # a wave's layers side by side: each accumulator owns its sums and generator
            feed(accs, original, original_model, model if sequential else None, calib, access, workers)
            done = [r for solved in workers.each(lambda acc: solve(acc, weights, original, ridge), accs) for r in solved]
        values = {name: v for r in done for name, v in r.values.items()}
        weights.update(values)
        if sequential and k + 1 < len(waves):
            model = access.with_values(model, values)
        refits += done
    return refits, inputs


def feed(accs: list[Accumulator], original: Graph, original_model, current_model, calib, access,
         workers: Workers | None = None) -> None:
    """Every calibration batch into ``accs``: the original's outputs (targets) and inputs (for bias compensation);
    the layers' inputs from ``current_model`` (the model refitted so far), or the original's restricted to the
    kept channels when it is None. A batch's accumulators are fed side by side on ``workers``."""
    others = [acc.target.residual.other for acc in accs  # a sum fitted with its partner reads the partner instead
              if acc.target.residual is not None and acc.target.partner is None]
    partners = [acc.target.partner.target for acc in accs if acc.target.partner is not None]
    wanted = [n for acc in accs for n in (acc.target.layer.x, acc.target.y)] + others + [p.y for p in partners]
    runner = access.activations(original_model, wanted)
    current = None
    if current_model is not None:
        current = access.activations(current_model, [acc.target.layer.x for acc in accs] + others
                                     + [p.layer.x for p in partners])
    start = 0
    for batch in calib.batches(batch_for(original, wanted, 64)):
        seen = runner.run(batch)
        now = current.run(batch) if current is not None else None
        size = len(next(iter(batch.values())))
        held, start = held_out(size, start), start + size
        (workers or Workers(1)).each(lambda acc: add_batch(acc, seen, now, held), accs)


def add_batch(acc: Accumulator, seen: Mapping[str, np.ndarray], now: Mapping[str, np.ndarray] | None,
              held: np.ndarray) -> None:
    """One batch into ``acc``: the original's tensors ``seen``, the refitted-so-far model's ``now`` (or None)."""
    t = acc.target
    full = seen[t.layer.x]
    x = now[t.layer.x] if now is not None else np.take(full, t.kept_x, axis=t.layer.x_axis)
    if t.partner is not None:  # the sum fitted whole: no other addend's error to absorb
        partner = (now[t.partner.target.layer.x], seen[t.partner.target.y])
        acc.add(x, seen[t.y], full, None, held, None, partner)
    else:
        other = now[t.residual.other] if now is not None and t.residual is not None else None
        acc.add(x, seen[t.y], full, residual_shift(t, seen, now), held, other)


def residual_shift(t: Target, seen: Mapping[str, np.ndarray], now: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    """What the layer's output must add so that its residual sum matches the original's (He et al. 2017 §3.3):
    the other addend's error (original at the kept channels − the model refitted so far), over the gain between
    the layer's output and the sum. None without a residual or outside sequential inputs."""
    res = t.residual
    if res is None or now is None:
        return None
    want = seen[res.other] if t.kept_other is None else np.take(seen[res.other], t.kept_other, axis=res.other_axis)
    shape = [1] * want.ndim
    shape[res.other_axis] = -1
    return ((want.astype(np.float64) - now[res.other]) / res.gain.reshape(shape)).astype(np.float32)


def depths(g: Graph, todo: list[Target]) -> tuple[dict[str, int], dict[str, int]]:
    """Per tensor, one past the latest wave of any target upstream of it (0: none); per target node, its wave
    (the depth of its input). One pass over the nodes in order."""
    by_node = {t.layer.node: t for t in todo}
    depth: dict[str, int] = {}
    wave_of: dict[str, int] = {}
    for node in g.nodes:
        level = max((depth.get(i, 0) for i in node.inputs if i), default=0)
        if node.name in by_node:
            wave_of[node.name] = depth.get(by_node[node.name].layer.x, 0)
            level = max(level, wave_of[node.name] + 1)
        for o in node.outputs:
            depth[o] = level
    return depth, wave_of


def dependency_waves(g: Graph, todo: list[Target]) -> list[list[Target]]:
    """``todo`` in waves: a layer's wave is one past the latest wave of any target upstream of its input, so the
    layers of one wave read nothing another of them changes (parallel branches, q / k / v share one).

    A target fitting a residual sum keeps that only where the other addend is final when its wave runs (every
    refit upstream of it in an earlier wave): of two branches meeting at an ``Add``, the one refitted last
    absorbs the other's error."""
    depth, wave_of = depths(g, todo)
    waves: list[list[Target]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
    placed: list[Target] = []
    for t in todo:
        wave = wave_of[t.layer.node]
        if t.residual is not None and depth.get(t.residual.other, 0) > wave:
            t = without_residual(t)
        elif t.partner is not None and wave_of[t.partner.target.layer.node] > wave:
            t = dataclasses.replace(t, partner=None)
        placed.append(t)
    joined = {t.partner.target.layer.node for t in placed if t.partner is not None}
    for t in placed:
        if t.layer.node not in joined:  # a partner is fitted in its sum's wave
            waves[wave_of[t.layer.node]].append(t)
    return [w for w in waves if w]


MAX_WAVES = 24  # "auto": sequential up to this many waves (two calibration runs each), else from the original
COSINE_POINTS = 64  # calibration points the before / after output cosine is measured on


def judging_points(calib):
    """The calibration points the whole refit is judged on: the held-out ones, or all when there are none."""
    held = np.flatnonzero(held_out(calib.n_points))
    return calib.take(held) if len(held) else calib


def output_cosine(original_model, models, calib, input_shapes, points: int = COSINE_POINTS,
                  access=None) -> list[float]:
    """Mean over calibration points of the cosine between the original's outputs and each of ``models``'
    (all outputs of a point flattened together): how much of the function survived, before and after refitting."""
    access = access or OnnxAccess(input_shapes)
    batch = next(calib.head(points).batches(points))

    def flat(model) -> np.ndarray:
        names = access.outputs(model)
        out = access.activations(model, names).run(batch)
        return np.concatenate([np.asarray(out[n], np.float64).reshape(len(out[n]), -1) for n in names], axis=1)

    ref = flat(original_model)
    result = []
    for model in models:
        got = flat(model)
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cos = np.where(denom > 0, (ref * got).sum(1) / np.maximum(denom, 1e-300), 1.0)
        result.append(float(cos.mean()))
    return result

"""Data-informed sensitivity (PFP, Liebenwein et al. ICLR 2020; SiPP, Baykal et al. 2019), in numpy.

A *layer* here is a Conv, Gemm or MatMul whose weight is a constant and whose other operand is an activation.
Flatten its weight to ``W ∈ R^{F×D}`` per conv group (D = input channels × kernel positions) and the input
to rows (one row per point and output patch, im2col). With ``W⁺ = max(W, 0)``, ``W⁻ = min(W, 0)`` and a
non-negative row ``a`` (rows with negative entries are split into ``a⁺`` and ``a⁻`` rows, as the authors do):

    z⁺_f = Σ_d W⁺_{f,d} a_d,   z⁻_f = Σ_d W⁻_{f,d} a_d,
    g_{f,d} = W⁺_{f,d} a_d / z⁺_f  +  W⁻_{f,d} a_d / z⁻_f     (one of the two terms is 0; |z| ≤ eps gives 0)

* SiPP (weight level): ``s_{f,d} = max over rows of g_{f,d}``;
* PFP (input channel c, i.e. filter c of the producer): ``s_c = max over rows, f and the kernel positions
  u of channel c of g_{f,(c,u)}``.

Rows are processed in chunks sized to a fixed memory budget; nothing loops over channels in Python.
The sample-complexity helpers implement §2 of ALGORITHMS.md with the authors' code defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.layers import layer_of as weighted_layer
from graphprune.channels.rules import Space
from graphprune.ir import Graph, Node

EPS = float(np.finfo(np.float32).eps)  # |z| at or below this contributes nothing (authors' code)
CHUNK_ELEMENTS = 1 << 22  # elements of the (rows, groups, filters, D) temporary per chunk
DELTA = 1e-16  # failure probability δ of the sampling bound (code default)
DELTA_S = 1e-16  # failure probability of the data-set size bound (code default)


# ---- layers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A consumer of an activation with a constant weight, in a normal form for sensitivity.

    ``x_axis``: the axis of ``x`` that indexes input channels (features); ``w_axis``: the axis of the stored
    weight that matches it (what reweighting scales).
    """

    node: str
    op: str
    x: str
    x_axis: int
    weight: str
    w_axis: int
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[tuple[int, int], ...] = ()
    dilations: tuple[int, ...] = ()
    out_spatial: tuple[int, ...] = ()
    patches: int = 1  # output patches per point (conv positions, MatMul rows per point)
    trans_a: bool = False

    @property
    def kappa(self) -> int:
        """Kernel size κ (positions per input channel)."""
        return int(np.prod(self.kernel, dtype=np.int64)) if self.kernel else 1

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as (groups, filters per group, D) with D ordered (channel, kernel positions)."""
        w = np.asarray(w, np.float32)
        if self.op == "Conv":
            f = w.shape[0]
            return w.reshape(self.groups, f // self.groups, -1)
        if self.op == "Gemm":
            return (w if self.w_axis == 1 else w.T)[None]
        return w.T[None]  # MatMul: B is (K, N)

    def unmatrix(self, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`matrix` (for per-weight arrays)."""
        if self.op == "Conv":
            return m.reshape(shape)
        if self.op == "Gemm":
            return (m[0] if self.w_axis == 1 else m[0].T).reshape(shape)
        return m[0].T.reshape(shape)

    def rows(self, a: np.ndarray, rng: np.random.Generator | None = None, max_patches: int | None = None) -> np.ndarray:
        """Input rows (R, groups, D) of one batch of activations; at most ``max_patches`` patches per point."""
        return self.rows_at(a, rng, max_patches)[0]

    def rows_at(self, a: np.ndarray, rng: np.random.Generator | None = None,
                max_patches: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`rows` and the patch positions it drew (None: every patch), so outputs can be taken at the same."""
        a = np.asarray(a, np.float32)
        if self.op == "Gemm":
            r = a.T if self.trans_a else a
            return r.reshape(r.shape[0], 1, -1), None
        if self.op == "MatMul":
            k = a.shape[-1]
            per_point = a.reshape(a.shape[0], -1, k)
            pos = pick(per_point.shape[1], rng, max_patches)
            if pos is not None:
                per_point = per_point[:, pos]
            return per_point.reshape(-1, 1, k), pos
        pos = pick(int(np.prod(self.out_spatial, dtype=np.int64)), rng, max_patches)
        return self.conv_rows(a, pos), pos

    def conv_rows(self, a: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
        nd = len(self.kernel)
        b, c = a.shape[:2]
        xp = np.pad(a, [(0, 0), (0, 0), *self.pads])
        window = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilations))
        v = np.lib.stride_tricks.sliding_window_view(xp, window, axis=tuple(range(2, 2 + nd)))
        steps = tuple(slice(0, o * s, s) for o, s in zip(self.out_spatial, self.strides))
        dil = tuple(slice(None, None, d) for d in self.dilations)
        v = v[(slice(None), slice(None)) + steps + dil]  # (B, C, *O, *k), a view
        if pos is None:
            pos = np.arange(int(np.prod(self.out_spatial, dtype=np.int64)))
        idx = np.unravel_index(pos, self.out_spatial)
        picked = v[(slice(None), slice(None)) + tuple(idx)]  # (B, C, n, *k): only the chosen patches are copied
        picked = np.moveaxis(picked, 2, 1)  # (B, n, C, *k)
        g = self.groups
        return np.ascontiguousarray(picked).reshape(b * len(pos), g, (c // g) * self.kappa)


def pick(n: int, rng: np.random.Generator | None, max_patches: int | None) -> np.ndarray | None:
    """``max_patches`` of ``n`` patch positions drawn without replacement (sorted), or None to take all ``n``."""
    if max_patches is None or n <= max_patches:
        return None
    return np.sort((rng or np.random.default_rng(0)).choice(n, max_patches, replace=False))


def conv_pads(node: Node, in_spatial: tuple[int, ...], kernel, strides, dilations) -> tuple[tuple[int, int], ...]:
    nd = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for s, k, st, d in zip(in_spatial, kernel, strides, dilations):
            total = max(0, (math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return tuple(out)
    if auto == "VALID":
        return tuple((0, 0) for _ in range(nd))
    pads = tuple(int(p) for p in (node.attr("pads") or (0,) * (2 * nd)))
    return tuple((pads[i], pads[i + nd]) for i in range(nd))


def layer_of(graph: Graph, node: Node) -> Layer | None:
    """The sensitivity normal form of ``node``, or None when it is not a Conv / Gemm / MatMul weighted layer
    (:mod:`graphprune.channels.layers`) whose constant weight is its input 1 (a matrix for Gemm and MatMul)."""
    lay = weighted_layer(graph, node.name)
    if lay is None or lay.ops.w != 1 or lay.op not in ("Conv", "Gemm", "MatMul"):
        return None
    x, w, ops = lay.x, graph.tensor(lay.weight), lay.ops
    if lay.op == "Conv":
        if w.rank < 3:
            return None
        nd = w.rank - 2
        kernel = tuple(int(k) for k in w.shape[2:])
        strides = tuple(int(s) for s in (node.attr("strides") or (1,) * nd))
        dil = tuple(int(d) for d in (node.attr("dilations") or (1,) * nd))
        pads = conv_pads(node, graph.shape(x)[2:], kernel, strides, dil)
        out_spatial = tuple(int(o) for o in graph.shape(lay.y)[2:])
        return Layer(node.name, "Conv", x, ops.x_axis, lay.weight, ops.w_in, lay.groups, kernel, strides, pads, dil,
                     out_spatial, int(np.prod(out_spatial, dtype=np.int64)))
    if w.rank != 2:
        return None
    if lay.op == "Gemm":
        return Layer(node.name, "Gemm", x, ops.x_axis, lay.weight, ops.w_in, trans_a=ops.x_axis == 0)
    shape = graph.shape(x)
    patches = int(np.prod(shape[1:-1], dtype=np.int64)) if len(shape) > 2 else 1
    return Layer(node.name, "MatMul", x, ops.x_axis, lay.weight, ops.w_in, patches=patches)


def layers(graph: Graph) -> list[Layer]:
    return [lay for n in graph.nodes if (lay := layer_of(graph, n)) is not None]


# ---- the sensitivity kernel -----------------------------------------------------------------------------


def split_signs(rows: np.ndarray) -> np.ndarray:
    """Rows with negative entries become two non-negative rows, ``a⁺`` and ``a⁻ = max(−a, 0)``."""
    if rows.size == 0 or rows.min() >= 0:
        return rows
    neg = np.maximum(-rows, 0)
    keep = neg.reshape(len(rows), -1).any(1)
    return np.concatenate([np.maximum(rows, 0), neg[keep]])


def edge_ratios(rows: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
    """(R, G, F, D): ``W⁺/z⁺ + W⁻/z⁻`` per row, filter and weight (to be multiplied by the row's ``a``)."""
    zp = np.einsum("rgd,gfd->rgf", rows, w_pos)
    zn = np.einsum("rgd,gfd->rgf", rows, w_neg)
    with np.errstate(divide="ignore", over="ignore"):
        rp = np.where(zp > EPS, 1.0 / zp, 0.0).astype(np.float32)
        rn = np.where(zn < -EPS, 1.0 / zn, 0.0).astype(np.float32)
    return w_pos[None] * rp[..., None] + w_neg[None] * rn[..., None]


def chunks(n_rows: int, per_row: int) -> Iterable[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_row))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def channel_sensitivity(rows: np.ndarray, w: np.ndarray, kappa: int,
                        tops: "list[tuple[TopFilters, TopFilters]] | None" = None) -> np.ndarray:
    """PFP: per input channel (``G · D / κ`` of them), the max over rows, filters and kernel positions of g.

    For a non-negative row ``a`` and weight (f, d) exactly one of ``W⁺/z⁺`` and ``W⁻/z⁻`` is non-zero and both
    are ≥ 0, so ``max_f g_{f,d} · a_d = a_d · max(max_f W⁺_{f,d} / z⁺_f, max_f W⁻_{f,d} / z⁻_f)``: two
    max-product problems, solved exactly by :func:`max_product` without the (rows × filters × D) tensor.
    ``tops``: :func:`top_filters` of ``w`` per group, when the caller keeps them across batches."""
    rows = split_signs(rows)
    g, f, d = w.shape
    if f < TOP_FILTERS * 2:  # few filters per group (depthwise, small convs): the direct tensor is small
        return channel_sensitivity_direct(rows, w, kappa)
    tops = tops or top_filters(w)
    best = np.zeros((g, d), np.float32)
    for gi in range(g):  # a loop over conv groups, each a batched numpy problem
        r = rows[:, gi]
        (pos, neg) = tops[gi]
        zp, zn = r @ pos.b.T, r @ neg.b.T  # neg.b is -W⁻ ≥ 0, so zn = -z⁻
        with np.errstate(divide="ignore", over="ignore"):
            rp = np.where(zp > EPS, 1.0 / zp, 0.0).astype(np.float32)
            rn = np.where(zn > EPS, 1.0 / zn, 0.0).astype(np.float32)
        best[gi] = np.maximum(max_product(r, rp, pos), max_product(r, rn, neg))
    return best.reshape(g, d // kappa, kappa).max(-1).reshape(-1)


TOP_FILTERS = 4  # filters per column in the lower bound of max_product (measured: 2-8 alike; candidates stay < 0.3 %)


@dataclass(frozen=True, eq=False)
class TopFilters:
    """A non-negative weight ``b`` (F, D) with, per column, its ``TOP_FILTERS`` largest entries (``top``: their
    filter indices, ``values``) and the next largest (``next``): what :func:`max_product` bounds with."""

    b: np.ndarray
    top: np.ndarray
    values: np.ndarray
    next: np.ndarray


def top_filters(w: np.ndarray) -> list[tuple[TopFilters, TopFilters]]:
    """(W⁺, −W⁻) of each group of ``w`` (G, F, D) as :class:`TopFilters`."""
    out = []
    for wg in w:
        pair = []
        for b in (np.maximum(wg, 0), np.maximum(-wg, 0)):
            k = min(TOP_FILTERS, b.shape[0])
            part = np.argpartition(-b, k - 1 if k == b.shape[0] else k, axis=0)
            top = np.ascontiguousarray(part[:k])
            nxt = np.take_along_axis(b, part[k:k + 1], 0)[0] if b.shape[0] > k else np.zeros(b.shape[1], b.dtype)
            pair.append(TopFilters(np.ascontiguousarray(b), top, np.take_along_axis(b, top, 0), nxt))
        out.append(tuple(pair))
    return out


def max_product(x: np.ndarray, a: np.ndarray, t: TopFilters) -> np.ndarray:
    """``s_d = max_r x_{r,d} · max_f a_{r,f} b_{f,d}`` for non-negative ``x`` (R, D), ``a`` (R, F), ``b = t.b``
    (F, D), exactly, in far less than R·F·D work when the maximum is carried by few rows (as it is).

    A lower bound takes, per column, only its ``TOP_FILTERS`` largest ``b``; every filter outside them has ``b`` at
    most the next largest, so ``x_{r,d} · max_f a_{r,f} · next_d`` bounds what the rest can add. Only the pairs
    (r, d) whose bound beats the column's lower bound are computed over every filter (measured on a BERT export:
    up to 12 % of the pairs in the layers after a LayerNorm, < 0.3 % elsewhere; a second bound from each row's
    largest ``a`` cut that further but cost more than it saved)."""
    b = t.b
    n_f, n_d = b.shape
    low = np.take(a, t.top[0], axis=1) * t.values[0]
    for j in range(1, len(t.top)):
        np.maximum(low, np.take(a, t.top[j], axis=1) * t.values[j], out=low)
    best = (x * low).max(0) if len(x) else np.zeros(n_d, x.dtype)
    bound = x * (a.max(1)[:, None] * t.next[None])
    r_idx, d_idx = np.nonzero(bound > best[None])
    step = max(1, CHUNK_ELEMENTS // max(1, n_f))
    for start in range(0, len(r_idx), step):
        ri, di = r_idx[start:start + step], d_idx[start:start + step]
        exact = x[ri, di] * (a[ri] * b[:, di].T).max(1)
        np.maximum.at(best, di, exact)
    return best


def channel_sensitivity_direct(rows: np.ndarray, w: np.ndarray, kappa: int) -> np.ndarray:
    """:func:`channel_sensitivity` by the definition (the (rows, groups, filters, D) tensor, chunked); ``rows``
    already split into non-negative rows."""
    g, f, d = w.shape
    w_pos, w_neg = np.maximum(w, 0), np.minimum(w, 0)
    best = np.zeros((g, d), np.float32)
    for sl in chunks(len(rows), g * f * d):
        r = rows[sl]
        per_edge = (edge_ratios(r, w_pos, w_neg).max(axis=2)) * r  # (R, G, D): max over filters
        np.maximum(best, per_edge.max(axis=0), out=best)
    return best.reshape(g, d // kappa, kappa).max(-1).reshape(-1)


def weight_sensitivity(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """SiPP: per weight (G, F, D), the max over rows of g."""
    rows = split_signs(rows)
    g, f, d = w.shape
    w_pos, w_neg = np.maximum(w, 0), np.minimum(w, 0)
    best = np.zeros((g, f, d), np.float32)
    for sl in chunks(len(rows), g * f * d):
        r = rows[sl]
        np.maximum(best, (edge_ratios(r, w_pos, w_neg) * r[:, :, None, :]).max(axis=0), out=best)
    return best


class Tracker:
    """Running maxima of one layer's sensitivities over calibration batches."""

    def __init__(self, layer: Layer, weight: np.ndarray, *, per_weight: bool = False, max_patches: int | None = 64,
                 seed: int = 0):
        self.layer, self.per_weight, self.max_patches = layer, per_weight, max_patches
        self.w = layer.matrix(weight)
        self.tops = top_filters(self.w) if not per_weight and self.w.shape[1] >= TOP_FILTERS * 2 else None
        self.rng = np.random.default_rng(seed)
        self.channel = np.zeros(self.w.shape[0] * self.w.shape[2] // layer.kappa, np.float32)
        self.weight = np.zeros(self.w.shape, np.float32) if per_weight else None
        self.rows_seen = 0

    def update(self, activation: np.ndarray) -> None:
        rows = self.layer.rows(activation, self.rng, self.max_patches)
        self.rows_seen += len(rows)
        if self.per_weight:
            s = weight_sensitivity(rows, self.w)
            np.maximum(self.weight, s, out=self.weight)
            g, f, d = s.shape
            np.maximum(self.channel, s.reshape(g, f, d // self.layer.kappa, self.layer.kappa).max(axis=(1, 3)).reshape(-1),
                       out=self.channel)
        else:
            np.maximum(self.channel, channel_sensitivity(rows, self.w, self.layer.kappa, self.tops), out=self.channel)


# ---- sample complexity (ALGORITHMS.md §2, code defaults) -------------------------------------------------


def alpha(patches: int, kappa: int, delta: float = DELTA) -> float:
    """α = 6 · log(8 (P + 1) κ / δ)."""
    return 6.0 * math.log(8.0 * (patches + 1) * kappa / delta)


def sample_size(eps, alpha_: float, total_sensitivity: float):
    """m(ε) = ceil(3 (6 + 2ε) α S / ε²), as a float (inf when ε → 0); at least 1."""
    eps = np.asarray(eps, np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        m = np.ceil(3.0 * (6.0 + 2.0 * eps) * alpha_ * total_sensitivity / eps ** 2)
    return np.maximum(np.nan_to_num(m, nan=1.0, posinf=np.inf), 1.0)


def expected_distinct(p: np.ndarray, m: float) -> float:
    """Σ_c [1 − (1 − p_c)^m]: the expected number of distinct channels in ``m`` draws from ``p``."""
    p = np.asarray(p, np.float64)
    pos = p > 0
    if math.isinf(m):
        return float(pos.sum())
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        miss = np.exp(m * np.log1p(-np.minimum(p[pos], 1.0)))
    return float(np.sum(1.0 - np.nan_to_num(miss, nan=0.0)))


def kept_count(p: np.ndarray, m: float, n: int) -> int:
    """ceil(expected distinct draws), clipped to [1, n]."""
    return int(min(n, max(1, math.ceil(expected_distinct(p, m) - 1e-9))))


def points_needed(eta: int, eta_star: int, delta_s: float = DELTA_S) -> int:
    """|S| = ceil(3 · log(8 η* / δ′)) with δ′ = δ_S / η (η: output activations of all layers, η*: largest)."""
    return int(math.ceil(3.0 * math.log(8.0 * eta_star * eta / delta_s)))


def epsilon_for(m, alpha_: float, total_sensitivity):
    """The ε whose sample size is ``m`` (the inverse of :func:`sample_size` without the ceiling); vectorised."""
    m = np.asarray(m, np.float64)
    a = alpha_ * np.asarray(total_sensitivity, np.float64)
    return 3.0 * a / m + np.sqrt(9.0 * a * a / (m * m) + 18.0 * a / m)


def group_layers(cg: ChannelGraph) -> dict[int, list[Layer]]:
    """Prunable group id → the layers that read the group's channels as their inputs."""
    out: dict[int, list[Layer]] = {}
    for layer in layers(cg.graph):
        gid = cg.group_of.get(Space(layer.x, layer.x_axis))
        if gid is not None and cg.groups[gid].prunable:
            out.setdefault(gid, []).append(layer)
    return out

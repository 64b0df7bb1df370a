"""Data-informed sensitivity (PFP, Liebenwein et al. ICLR 2020; SiPP, Baykal et al. 2019), in numpy
(PFP's max-product loop compiled: :mod:`graphprune.methods.maxproduct`).

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
from typing import Callable, Iterable, Sequence

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.layers import layer_of as weighted_layer
from graphprune.channels.rules import Space
from graphprune.ir import Graph, Node
from graphprune.workers import Workers

EPS = float(np.finfo(np.float32).eps)  # z at or below this × its row's largest contributes nothing (see inverse)
TINY = float(np.finfo(np.float32).tiny)  # 1 / z of a z above this is finite in float32
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
    patches: int = 1  # output patches per point (conv positions, MatMul rows per point: rows_of_a_point)
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
        return (w if self.w_axis == 1 else w.T)[None]  # Gemm, MatMul: stored (out, in) when w_axis is 1

    def unmatrix(self, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`matrix` (for per-weight arrays)."""
        if self.op == "Conv":
            return m.reshape(shape)
        return (m[0] if self.w_axis == 1 else m[0].T).reshape(shape)

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
            per_point = a.reshape(-1, self.patches, k)
            pos = pick(per_point.shape[1], rng, max_patches)
            if pos is not None:
                per_point = per_point[:, pos]
            return per_point.reshape(-1, 1, k), pos
        pos = pick(int(np.prod(self.out_spatial, dtype=np.int64)), rng, max_patches)
        return self.conv_rows(a, pos), pos

    def conv_rows(self, a: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
        """The im2col rows of the patches at ``pos`` (all when None), gathered from ``a`` itself: only the chosen
        patches' entries are read (the padded input is never built, a copy of the whole activation that cost more
        than the patches: 16 of 1024 positions of a 32×32 map), and those that fall in the padding are 0. One
        gather writes the rows in their final (point, patch, channel, kernel position) order: gathering per
        channel and transposing after cost a second pass (rows of the zoo's convs 35–40 % slower)."""
        b, c = a.shape[:2]
        n_out = int(np.prod(self.out_spatial, dtype=np.int64))
        flat, valid = self.patch_indices(np.arange(n_out) if pos is None else pos, a.shape[2:])
        n, kappa = flat.shape
        size = int(np.prod(a.shape[2:], dtype=np.int64))
        at = (flat[:, None, :] + (np.arange(c, dtype=np.intp) * size)[None, :, None]).reshape(-1)  # (n, C, κ)
        out = np.take(a.reshape(b, c * size), at, axis=1).reshape(b, n, c, kappa)
        if not valid.all():
            out *= valid[None, :, None, :]  # the padding's entries (read clipped into the input) made 0
        g = self.groups
        return out.reshape(b * n, g, (c // g) * kappa)

    def patch_indices(self, pos: np.ndarray, in_spatial) -> tuple[np.ndarray, np.ndarray]:
        """(n, κ): the flat input position each chosen patch reads at each kernel position (clipped into the
        input), and whether it lies inside the input rather than in the padding."""
        nd = len(self.kernel)
        outs = np.unravel_index(pos, self.out_spatial)
        flat, valid = np.zeros((len(pos),) + (1,) * nd, np.intp), np.ones((len(pos),) + (1,) * nd, bool)
        for i, (o, k, s, d, (lo, _), size) in enumerate(zip(outs, self.kernel, self.strides, self.dilations,
                                                             self.pads, in_spatial)):
            shape = [len(pos)] + [1] * nd
            shape[1 + i] = k
            at = (o[:, None] * s - lo + np.arange(k) * d).reshape(shape)
            valid = valid & (at >= 0) & (at < size)
            flat = flat * size + np.clip(at, 0, size - 1)
        return flat.reshape(len(pos), -1), valid.reshape(len(pos), -1)


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
        cut = tuple((i + p[0] + p[1] - d * (k - 1) - 1) // s + 1
                    for i, p, d, k, s in zip(graph.shape(x)[2:], pads, dil, kernel, strides))
        if cut != out_spatial:
            return None  # the attributes do not describe the patches the output was computed from
        return Layer(node.name, "Conv", x, ops.x_axis, lay.weight, ops.w_in, lay.groups, kernel, strides, pads, dil,
                     out_spatial, int(np.prod(out_spatial, dtype=np.int64)))
    if w.rank != 2:
        return None
    if lay.op == "Gemm":
        return Layer(node.name, "Gemm", x, ops.x_axis, lay.weight, ops.w_in, trans_a=ops.x_axis == 0)
    return Layer(node.name, "MatMul", x, ops.x_axis, lay.weight, ops.w_in, patches=rows_of_a_point(graph, x))


def rows_of_a_point(graph: Graph, x: str) -> int:
    """A MatMul's input rows per calibration point: every axis but the last, less the points (the analysed
    batch, on the model inputs' axis 0). A point's rows may reach past axis 1: a ``(128, 256)`` input of a BERT
    export is 128 rows of one point, MobileViT's ``(4, 64, 144)`` 256 (:mod:`graphprune.points`)."""
    shape = graph.shape(x)
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    batch = analysed_batch(graph)
    return rows // batch if rows % batch == 0 and rows >= batch else max(1, rows // max(1, shape[0]))


def analysed_batch(graph: Graph) -> int:
    """The points one analysed run holds: the least axis 0 of the model's inputs (1 when none has one)."""
    return min((graph.shape(i)[0] for i in graph.inputs if graph.shape(i)), default=1) or 1


def layers(graph: Graph) -> list[Layer]:
    return [lay for n in graph.nodes if (lay := layer_of(graph, n)) is not None]


# ---- the sensitivity kernel -----------------------------------------------------------------------------


def split_signs(rows: np.ndarray) -> np.ndarray:
    """Rows with negative entries become two non-negative rows, ``a⁺`` and ``a⁻ = max(−a, 0)`` (all ``a⁺`` rows
    first, then the ``a⁻`` rows of the rows that have a negative entry), written once into the result."""
    if rows.size == 0:
        return rows
    keep = rows.reshape(len(rows), -1).min(1) < 0
    n = int(keep.sum())
    if n == 0:
        return rows
    out = np.empty((len(rows) + n,) + rows.shape[1:], rows.dtype)
    np.maximum(rows, 0, out=out[:len(rows)])
    neg = np.negative(rows if n == len(rows) else rows[keep], out=out[len(rows):])
    np.maximum(neg, 0, out=neg)
    return out


def edge_ratios(rows: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
    """(R, G, F, D): ``W⁺/z⁺ + W⁻/z⁻`` per row, filter and weight (to be multiplied by the row's ``a``)."""
    zp = np.einsum("rgd,gfd->rgf", rows, w_pos)
    zn = -np.einsum("rgd,gfd->rgf", rows, w_neg)  # -z⁻ ≥ 0
    rp = inverse(zp, zp.max(axis=(1, 2), keepdims=True)).astype(np.float32)
    rn = -inverse(zn, zn.max(axis=(1, 2), keepdims=True)).astype(np.float32)
    e = w_pos[None] * rp[..., None]
    e += w_neg[None] * rn[..., None]
    return e


def chunks(n_rows: int, per_row: int) -> Iterable[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_row))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def channel_sensitivity(rows: np.ndarray, w: np.ndarray, kappa: int, signed: "tuple[Signed, Signed] | None" = None,
                        floor: np.ndarray | None = None) -> np.ndarray:
    """PFP: per input channel (``G · D / κ`` of them), the max over rows, filters and kernel positions of g.

    ``floor`` (per channel, e.g. the maxima of earlier batches): the result is the max of it and the rows'
    sensitivities, the same numbers, but pairs that cannot beat it are never computed. ``signed``:
    :func:`signed_weights` of ``w``, when the caller keeps them across batches.

    For a non-negative row ``a`` and weight (f, d) exactly one of ``W⁺/z⁺`` and ``W⁻/z⁻`` is non-zero and both
    are ≥ 0, so ``max_f g_{f,d} · a_d = a_d · max(max_f W⁺_{f,d} / z⁺_f, max_f W⁻_{f,d} / z⁻_f)``: two
    max-product problems, solved exactly by :func:`bounded_max` without the (rows × filters × D) tensor."""
    g, f, d = w.shape
    floor = np.zeros(g * d // kappa, np.float32) if floor is None else np.asarray(floor, np.float32)
    if f < DIRECT_FILTERS:  # few filters per group (depthwise, small convs): the definition, compiled
        return np.maximum(floor, direct_max(rows, w, kappa))
    rows = split_signs(rows)
    if len(rows) == 0:
        return floor.copy()
    return bounded_max(rows, w, kappa, signed or signed_weights(w), floor)


DIRECT_FILTERS = 8  # below this many filters per group the (rows, G, F, D) tensor is small: the definition runs
TOP_FILTERS = 16  # a column's (and a row's) largest entries tried before the bound sends a pair to every filter:
# on resnet50 at 64 px 4 left 1e9 products to full scans, 16 left 4e7 (see bounded_max)


@dataclass(frozen=True, eq=False)
class Signed:
    """One sign of a layer's weight, made non-negative: ``b = max(W, 0)`` or ``max(−W, 0)`` per group, kept as
    ``bt`` (G, D, F), its transpose, contiguous (the matmul reads it so, and a pair taken over every filter reads
    column d of ``b`` as a contiguous row); per column its ``TOP_FILTERS`` largest entries (``top``: their
    filters, ``values``, the largest first, both (G, K, D)) and the largest outside them (``next``): what :func:`bounded_max`
    bounds with."""

    negative: bool
    bt: np.ndarray
    top: np.ndarray
    values: np.ndarray
    next: np.ndarray


def sign_part(w: np.ndarray, negative: bool) -> np.ndarray:
    """``max(W, 0)``, or ``max(−W, 0)`` for the negative part: one sign of a weight, non-negative."""
    return np.maximum(-w, 0) if negative else np.maximum(w, 0)


def signed_weights(w: np.ndarray) -> tuple[Signed, Signed]:
    """(W⁺, −W⁻) of ``w`` (G, F, D) as :class:`Signed`, their column tops found once per layer."""
    from graphprune.methods.maxproduct import row_tops

    out = []
    for negative in (False, True):
        bt = np.ascontiguousarray(sign_part(w, negative).transpose(0, 2, 1))
        g, d, f = bt.shape
        top, values, nxt = row_tops(bt.reshape(g * d, f), TOP_FILTERS)
        top = np.ascontiguousarray(top.reshape(g, d, -1).transpose(0, 2, 1))  # (G, K, D): a column's first is contiguous
        values = np.ascontiguousarray(values.reshape(g, d, -1).transpose(0, 2, 1))
        nxt = nxt.reshape(g, d)
        out.append(Signed(negative, bt, top, values, nxt))
    return out[0], out[1]


def reciprocals(rows: np.ndarray, s: Signed) -> np.ndarray:
    """(G, R, F): ``1 / z`` of each row and filter of this sign (0 where ``z ≤ eps``), one BLAS product per group."""
    g, d, f = s.bt.shape
    z = np.empty((g, len(rows), f), np.float32)
    for gi in range(g):  # a loop over conv groups, each one matrix product
        np.matmul(rows[:, gi], s.bt[gi], out=z[gi])
    return inverse(z, z.max(axis=(0, 2), keepdims=True))


def inverse(z: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """``1 / z`` where ``z`` is above ``EPS`` times the largest ``z`` of its row (one point and patch, over every
    group and filter), else 0. The authors' code drops outputs with ``z ≤ EPS`` as rounding noise; relative to
    the row it does the same on a trained net and stays scale-free, as the ratio ``a w / z`` is: an untrained
    net's activations of 1e-8 (torchvision's init, eval-mode BN) would otherwise all count as noise and give a
    whole group zero sensitivity."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where((z > EPS * row_max) & (z > TINY), 1.0 / z, 0.0).astype(z.dtype, copy=False)


def bounded_max(rows: np.ndarray, w: np.ndarray, kappa: int, signed: tuple[Signed, Signed],
                floor: np.ndarray) -> np.ndarray:
    """``max(floor_c, max over rows r, filters f and columns d of channel c of x_{r,d} · a_{r,f} · b_{f,d})`` for
    both signs (``a = 1/z``, ``b`` of :class:`Signed`), exactly, computing few of the R·F·D products: the
    compiled loop of :func:`graphprune.methods.maxproduct.raise_best`, one call per sign and conv group, after
    one BLAS product per group for ``z``. Measured on resnet50 at 64 px: of 229M (row, column) pairs, 105M
    with a non-zero input, the first bound leaves 7.1M to their columns' largest weights and 0.04M to every
    filter."""
    from graphprune.methods.maxproduct import raise_best  # numba loads when a kernel first runs, not on import

    g, f, d = w.shape
    rows = np.ascontiguousarray(rows, np.float64 if rows.dtype == np.float64 else np.float32)
    best = floor.reshape(g, d // kappa).astype(np.float32, copy=True)
    for s in signed:
        a = reciprocals(rows, s)
        amax = a.max(-1)
        for gi in range(g):  # a loop over conv groups: each one compiled pass over the group's pairs
            raise_best(rows, gi, a[gi], amax[gi], s.top[gi], s.values[gi], s.next[gi], s.bt[gi], kappa, best[gi])
    return best.reshape(-1)


def direct_max(rows: np.ndarray, w: np.ndarray, kappa: int) -> np.ndarray:
    """:func:`channel_sensitivity` of a layer with few filters per group: every product taken, in one compiled
    pass per row (:func:`graphprune.methods.maxproduct.direct_best`; ``rows`` signed, split there). The same
    numbers as :func:`channel_sensitivity_direct` (tested bit for bit), without its (rows, groups, filters, D)
    temporaries: on efficientnet_b0's depthwise layers 3-4x faster."""
    from graphprune.methods.maxproduct import direct_best  # numba loads when a kernel first runs, not on import

    g, _, d = w.shape
    best = np.zeros((g, d), np.float32)
    if len(rows):
        signs = (np.ascontiguousarray(sign_part(w, negative), np.float32) for negative in (False, True))
        direct_best(np.ascontiguousarray(rows, np.float64 if rows.dtype == np.float64 else np.float32), *signs,
                    np.float32(EPS), np.float32(TINY), best)
    return best.reshape(g, d // kappa, kappa).max(-1).reshape(-1)


def channel_sensitivity_direct(rows: np.ndarray, w: np.ndarray, kappa: int) -> np.ndarray:
    """:func:`channel_sensitivity` by the definition (the (rows, groups, filters, D) tensor, chunked); ``rows``
    already split into non-negative rows. The reference the compiled kernels are tested against."""
    g, f, d = w.shape
    w_pos, w_neg = np.maximum(w, 0), np.minimum(w, 0)
    best = np.zeros((g, d), np.float32)
    for sl in chunks(len(rows), g * f * d):
        r = rows[sl]
        e = edge_ratios(r, w_pos, w_neg)
        per_edge = e[:, :, 0] if f == 1 else e.max(axis=2)  # (R, G, D): max over filters
        per_edge *= r
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
        self.signed = signed_weights(self.w) if not per_weight and self.w.shape[1] >= DIRECT_FILTERS else None
        self.rng = np.random.default_rng(seed)
        self.channel = np.zeros(self.w.shape[0] * self.w.shape[2] // layer.kappa, np.float32)
        self.weight = np.zeros(self.w.shape, np.float32) if per_weight else None
        self.rows_seen = 0

    def cost(self) -> int:
        """The work of one point's :meth:`update`, up to a constant: its rows times the weight's entries."""
        patches = self.layer.patches if self.max_patches is None else min(self.layer.patches, self.max_patches)
        return int(self.w.size) * max(1, patches)

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
            self.channel = channel_sensitivity(rows, self.w, self.layer.kappa, self.signed, floor=self.channel)


def tracked(found: Sequence[Layer], weight_of: Callable[[str], np.ndarray], feed: Callable[[Callable], object], *,
            per_weight: bool = False, max_patches: int | None = 64, seed: int = 0) -> list[Tracker]:
    """A :class:`Tracker` per layer of ``found`` (seeded ``seed + i``), fed every calibration batch: ``feed`` is
    called once with the per-batch callback (``gather``'s ``on_batch``). A batch's layers run side by side on
    every core, each with single-threaded BLAS (:mod:`graphprune.workers` says why), the costliest first so the
    threads finish together; each tracker draws from its own generator, so the numbers do not depend on the
    number of threads."""
    with Workers() as workers:
        trackers = workers.each(lambda item: Tracker(item[1], weight_of(item[1].weight), per_weight=per_weight,
                                                     max_patches=max_patches, seed=seed + item[0]),
                                list(enumerate(found)))
        by_cost = sorted(trackers, key=Tracker.cost, reverse=True)
        if trackers:
            feed(lambda values: workers.each(lambda t: t.update(values[t.layer.x]), by_cost))
    return trackers


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
    return distinct_draws(log_misses(p), m)


def log_misses(p: np.ndarray) -> np.ndarray:
    """``log(1 − p_c)`` of the channels with ``p_c > 0``: what :func:`distinct_draws` needs of ``p``, computed once
    for a search that asks for many ``m``."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):
        return np.log1p(-np.minimum(p[p > 0], 1.0))


def distinct_draws(log_miss: np.ndarray, m: float) -> float:
    """:func:`expected_distinct` from :func:`log_misses`."""
    if math.isinf(m):
        return float(len(log_miss))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        miss = np.exp(m * log_miss)
    return float(np.sum(1.0 - np.nan_to_num(miss, nan=0.0)))


def kept_count(p: np.ndarray, m: float, n: int) -> int:
    """ceil(expected distinct draws), clipped to [1, n]."""
    return kept_of(expected_distinct(p, m), n)


def kept_of(distinct: float, n: int) -> int:
    """:func:`kept_count` from the expected distinct draws."""
    return int(min(n, max(1, math.ceil(distinct - 1e-9))))


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

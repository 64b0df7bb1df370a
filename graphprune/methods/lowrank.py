"""Low-rank math, numpy only: truncated SVD, the rank rule, the matrix views of a weight, the factor kernels,
and the multiply-accumulate counts of a layer before and after decomposition.

Notation (ALGORITHMS.md section 5): a matrix M = U S Vᵀ is replaced by the product of ``U_r`` and ``S_r V_rᵀ``.

* A Gemm / MatMul weight is that matrix as stored.
* A conv weight (n, c/G, *k) with G groups is G matrices, one per group, in one of two views:
  channel-wise, (n/G) × (c/G·∏k) — r filters of c/G×k×k, then a 1×1 conv back to n/G;
  spatial-wise (2-D convs), (c/G·kh) × (n/G·kw) — a kh×1 conv with r filters, then a 1×kw conv to n/G.
  All groups share one rank r (the largest any group needs) so that both factors stay grouped convs.

Both the ONNX pass and the torch path call these functions, so they make the same choices. :func:`plan_layers`
chooses the layers of a graph (a layer is decomposed only when its real MAC count falls by at least
:data:`DEFAULT_MIN_SAVING`; every other candidate is listed with the reason).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphprune.errors import UsageError
from graphprune.channels.layers import operands
from graphprune.ir import Graph, Node
from graphprune.methods.cost import node_macs

Scheme = Literal["channel", "spatial"]
DEFAULT_ENERGY = 0.9  # ALGORITHMS.md section 5, "(code)"
DEFAULT_MIN_SAVING = 0.2
"""Least fraction of a layer's MACs its decomposition must save (``--min-saving``). Two ops cost one more kernel
launch and an intermediate tensor, so a small saving is slower, not faster. Measured in onnxruntime (CPU, one
thread, batch 1 and 8; ``benchmarks/lowrank_min_saving.py``, ``benchmarks/results/lowrank_min_saving.json``) on
one-layer Conv / Gemm / MatMul models decomposed at exact ranks / ranks in multiples of 16 (the default
``--round-to``): on the shapes where decomposing ever pays, savings under 10 % were slower in 16 of 24 / 7 of 18
cases (up to 1.5x / 1.1x), 10-20 % in 5 of 24 / 1 of 18, 20 % or more in 1 of 60 (1.04x) / none of 46. Tiny
layers (digits_vgg's 1-channel 3x3 stem, a 16-channel 3x3 conv) were slower even at 50 %."""


# --------------------------------------------------------------------------- the rank rule


@dataclass(frozen=True)
class RankRule:
    """How to pick r from singular values: exactly one of ``energy`` (smallest r with Σ_{i≤r} σ_i² ≥ e·Σσ²),
    ``rank_ratio`` (r = ⌈q · full rank⌉) or ``sv_threshold`` (r = #{σ_i > t}, absolute, as in the TRP code);
    none given means ``energy=0.9``. r is then rounded up to a multiple of ``round_to`` (never above full rank)
    and is at least 1."""

    energy: float | None = None
    rank_ratio: float | None = None
    sv_threshold: float | None = None
    round_to: int = 1

    def __post_init__(self) -> None:
        check_rank_options(self.energy, self.rank_ratio, self.sv_threshold, self.round_to)

    @property
    def describe(self) -> str:
        if self.rank_ratio is not None:
            return f"rank ratio {self.rank_ratio:g}"
        if self.sv_threshold is not None:
            return f"singular values > {self.sv_threshold:g}"
        return f"energy {self.energy if self.energy is not None else DEFAULT_ENERGY:g}"

    def rank(self, s: np.ndarray) -> int:
        """The rank for singular values ``s`` (any order; one set, or the concatenation for one group)."""
        s = np.sort(np.abs(np.asarray(s, np.float64)))[::-1]
        full = len(s)
        if full == 0:
            return 0
        if self.rank_ratio is not None:
            r = math.ceil(self.rank_ratio * full - 1e-9)
        elif self.sv_threshold is not None:
            r = int(np.count_nonzero(s > self.sv_threshold))
        else:
            r = energy_rank(s, self.energy if self.energy is not None else DEFAULT_ENERGY)
        return rounded(max(1, r), full, self.round_to)


def check_min_saving(min_saving: float) -> None:
    """Raise :class:`UsageError` unless ``min_saving`` is a fraction in [0, 1)."""
    if not 0.0 <= min_saving < 1.0:
        raise UsageError(f"minimum saving {min_saving} is out of range; it must be in [0, 1) (e.g. "
                         f"{DEFAULT_MIN_SAVING:g}: each decomposed layer saves at least that fraction of its MACs)")


def check_rank_options(energy: float | None, rank_ratio: float | None, sv_threshold: float | None,
                       round_to: int = 1) -> None:
    """Raise :class:`UsageError` unless at most one rank choice is given and each is in range."""
    given = [f for f, v in (("--energy", energy), ("--rank-ratio", rank_ratio), ("--sv-threshold", sv_threshold))
             if v is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} are mutually exclusive: choose the rank one way "
                         f"(energy, rank ratio or singular-value threshold)")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise UsageError(f"energy {energy} is out of range; it must be in (0, 1] (e.g. 0.9)")
    if rank_ratio is not None and not 0.0 < rank_ratio <= 1.0:
        raise UsageError(f"rank ratio {rank_ratio} is out of range; it must be in (0, 1]")
    if sv_threshold is not None and not sv_threshold >= 0.0:
        raise UsageError(f"singular-value threshold {sv_threshold} must be >= 0")
    if round_to < 1:
        raise UsageError(f"round-to {round_to} must be a positive integer")


def energy_rank(s: np.ndarray, energy: float) -> int:
    """Smallest r with Σ_{i≤r} σ_i² ≥ energy · Σ σ_i² (``s`` sorted descending)."""
    e2 = np.asarray(s, np.float64) ** 2
    total = float(e2.sum())
    if total <= 0.0:
        return 1
    cum = np.cumsum(e2) / total
    return int(min(len(s), np.searchsorted(cum, energy * (1.0 - 1e-12), side="left") + 1))


def rounded(r: int, full: int, round_to: int) -> int:
    """r rounded up to a multiple of ``round_to``, at most ``full``; like channel counts, a layer whose full rank
    is at most ``round_to`` is not rounded."""
    if 1 < round_to < full:
        r = math.ceil(r / round_to) * round_to
    return int(min(full, r))


# --------------------------------------------------------------------------- SVD


def svd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD in float64 (a stack of matrices works too)."""
    return np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)


def factor(m: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(U_r, S_r V_rᵀ) with m ≈ U_r @ (S_r V_rᵀ); works on a stack (..., rows, cols)."""
    u, s, vt = svd(m)
    return u[..., :, :r], s[..., :r, None] * vt[..., :r, :]


def truncate(m: np.ndarray, r: int) -> np.ndarray:
    """The best rank-r approximation U_r S_r V_rᵀ of m (of each matrix of a stack)."""
    a, b = factor(m, r)
    return a @ b


# --------------------------------------------------------------------------- matrix views of a conv weight


def conv_matrices(w: np.ndarray, groups: int, scheme: Scheme) -> np.ndarray:
    """The (G, rows, cols) stack the scheme decomposes: channel (n/G, c/G·∏k), spatial (c/G·kh, n/G·kw)."""
    n, cg = w.shape[:2]
    per = w.reshape(groups, n // groups, cg, *w.shape[2:])
    if scheme == "channel":
        return per.reshape(groups, n // groups, -1)
    if w.ndim != 4:
        raise ValueError("the spatial scheme needs a 2-D conv")
    kh, kw = w.shape[2:]
    return per.transpose(0, 2, 3, 1, 4).reshape(groups, cg * kh, (n // groups) * kw)


def conv_from_matrices(mats: np.ndarray, shape: tuple[int, ...], scheme: Scheme) -> np.ndarray:
    """Inverse of :func:`conv_matrices`."""
    groups = mats.shape[0]
    n, cg = shape[:2]
    if scheme == "channel":
        return mats.reshape(shape)
    kh, kw = shape[2:]
    per = mats.reshape(groups, cg, kh, n // groups, kw).transpose(0, 3, 1, 2, 4)
    return per.reshape(shape)


def matrix_ranks(mats: np.ndarray, rule: RankRule) -> tuple[int, int]:
    """(r, full rank) for a stack of matrices: the largest r any group needs."""
    s = np.linalg.svd(np.asarray(mats, np.float64), compute_uv=False)
    s = s.reshape(-1, s.shape[-1])
    return max(rule.rank(row) for row in s), s.shape[-1]


def truncate_conv(w: np.ndarray, r: int, groups: int, scheme: Scheme) -> np.ndarray:
    """The conv weight whose every group matrix is truncated to rank r (the "truncated original")."""
    return conv_from_matrices(truncate(conv_matrices(w, groups, scheme), r), w.shape, scheme).astype(w.dtype)


def conv_factors(w: np.ndarray, r: int, groups: int, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of the two convs replacing ``w`` (n, c/G, *k), both with ``groups`` groups.

    channel: first (G·r, c/G, *k), second (n, r, 1, …, 1).
    spatial: first (G·r, c/G, kh, 1), second (n, r, 1, kw).
    """
    n, cg = w.shape[:2]
    ng = n // groups
    u, svt = factor(conv_matrices(w, groups, scheme), r)  # (G, rows, r), (G, r, cols)
    if scheme == "channel":
        first = svt.reshape(groups * r, cg, *w.shape[2:])
        second = u.reshape(n, r, *([1] * (w.ndim - 2)))
    else:
        kh, kw = w.shape[2:]
        first = u.reshape(groups, cg, kh, r).transpose(0, 3, 1, 2).reshape(groups * r, cg, kh, 1)
        second = svt.reshape(groups, r, ng, kw).transpose(0, 2, 1, 3).reshape(n, r, 1, kw)
    return first.astype(w.dtype), second.astype(w.dtype)


# --------------------------------------------------------------------------- multiply-accumulates


def matmul_macs(rows: int, k: int, n: int, r: int | None = None) -> int:
    """MACs of ``rows`` products with a k×n weight, or with its rank-r factors (k×r then r×n)."""
    return rows * k * n if r is None else rows * r * (k + n)


def conv_macs(out_shape: tuple[int, ...], in_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int,
              r: int | None = None, scheme: Scheme = "channel") -> int:
    """Real MACs of a conv (output spatial size included) or of its two-conv replacement at rank r.

    ``out_shape`` is (N, n, *spatial out), ``in_shape`` (N, c, *spatial in), ``w_shape`` (n, c/G, *k).
    The spatial scheme's first conv keeps the input width (kernel 1, stride 1, no padding along W)."""
    out = np.prod(out_shape, dtype=np.int64)
    n, cg, k = w_shape[0], w_shape[1], w_shape[2:]
    if r is None:
        return int(out * cg * np.prod(k, dtype=np.int64))
    per_channel = out // n  # N · ∏ spatial out
    if scheme == "channel":
        return int(per_channel * groups * r * cg * np.prod(k, dtype=np.int64) + out * r)
    kh, kw = k
    batch, ho, width_in = out_shape[0], out_shape[2], in_shape[3]
    return int(batch * groups * r * ho * width_in * cg * kh + out * r * kw)


# --------------------------------------------------------------------------- choosing layers


OPS = ("Conv", "Gemm", "MatMul")


Kind = Literal["matrix", "channel", "spatial"]


@dataclass(frozen=True)
class Layer:
    """One decomposed layer (stored as JSON in the model's metadata)."""

    node: str
    op: str
    weight: str  # the initializer that was factored
    kind: Kind  # "matrix" for Gemm / MatMul, the scheme for Conv
    groups: int
    rank: int
    full_rank: int
    macs_before: int
    macs_after: int

    def truncated(self, w: np.ndarray, rank: int | None = None) -> np.ndarray:
        """``w`` with the rank this layer was decomposed at (or ``rank``): the truncated-original weight."""
        r = self.rank if rank is None else rank
        if self.kind == "matrix":
            return truncate(w, r).astype(w.dtype)
        return truncate_conv(w, r, self.groups, self.kind)


@dataclass(frozen=True)
class Skipped:
    node: str
    op: str
    why: str
    below_min_saving: bool = False  # its MACs would fall, but by less than the minimum saving


def plan_layers(graph: Graph, rule: RankRule, scheme: Scheme, *, exclude=(), ops=OPS, only_if_cheaper: bool = True,
                min_saving: float = DEFAULT_MIN_SAVING) -> tuple[list[Layer], list[Skipped]]:
    """The layers of ``graph`` to decompose, and every other candidate with why not. ``only_if_cheaper``: only
    layers whose MACs fall by at least ``min_saving`` (a fraction of the layer's MACs; see
    :data:`DEFAULT_MIN_SAVING`); off, every layer that can be decomposed is (tests)."""
    layers, skipped = [], []
    for node in graph.nodes:
        if node.op not in ops or node.domain not in ("", "ai.onnx"):
            continue
        if any(fnmatch.fnmatchcase(node.name, p) for p in exclude):
            skipped.append(Skipped(node.name, node.op, "excluded by --exclude"))
            continue
        decision = decide(graph, node, rule, scheme)
        if isinstance(decision, str):
            skipped.append(Skipped(node.name, node.op, decision))
        elif only_if_cheaper and (why := not_worth(decision, min_saving)):
            skipped.append(Skipped(node.name, node.op, why, below_min_saving=saving(decision) > 0))
        else:
            layers.append(decision)
    return layers, skipped


def saving(layer: Layer) -> float:
    """The fraction of the layer's MACs its decomposition saves (negative when it costs more)."""
    return 1.0 - layer.macs_after / layer.macs_before


def not_worth(layer: Layer, min_saving: float) -> str | None:
    """Why decomposing ``layer`` does not pay (None when it does): MACs do not fall, or fall by less than
    ``min_saving``, which an extra op costs back in latency."""
    rank = f"rank {layer.rank} of {layer.full_rank}"
    if layer.macs_after >= layer.macs_before:
        return f"{rank} would not lower MACs ({layer.macs_before} -> {layer.macs_after})"
    if saving(layer) < min_saving:
        return (f"{rank} would save {saving(layer):.1%} of its MACs ({layer.macs_before} -> {layer.macs_after}), "
                f"below the minimum saving {min_saving:.0%} (--min-saving)")
    return None


def weight_input(graph: Graph, node: Node) -> int | str:
    """Index of the constant weight input, or why there is none."""
    if node.op == "Conv":
        idx = 1
    elif node.op == "Gemm":
        idx = 1
        if graph.is_const(node.input(0)):
            return "input A is a constant; only a constant B (the weight) is decomposed"
    else:
        consts = [i for i in (1, 0) if graph.is_const(node.input(i))]
        if len(consts) != 1:
            return "needs exactly one constant input (the weight)"
        idx = consts[0]
    value = graph.value(node.input(idx))
    if value is None:
        return "the weight is computed at run time, not a constant"
    if not np.issubdtype(value.dtype, np.floating):
        return f"the weight is {value.dtype}, not floating point"
    if node.op != "Conv" and value.ndim != 2:
        return f"the weight has rank {value.ndim}; only 2-D weights are decomposed"
    users = graph.consumers.get(node.input(idx), ())
    if len(users) > 1:
        others = ", ".join(n.name for n in users if n is not node)
        return f"the weight is shared with {others}; decomposing would duplicate it"
    return idx


def decide(graph: Graph, node: Node, rule: RankRule, scheme: Scheme) -> Layer | str:
    """The decomposition of ``node`` under ``rule`` (MACs before and after), or why it cannot be decomposed."""
    idx = weight_input(graph, node)
    if isinstance(idx, str):
        return idx
    w = graph.value(node.input(idx))
    before = node_macs(graph, node)
    y = graph.shape(node.outputs[0])
    if y is None or not before:
        return "static shapes unknown; cannot count MACs"
    if node.op == "Conv":
        x = graph.shape(node.inputs[0])
        groups = int(node.attr("group", 1))
        if scheme == "spatial" and w.ndim != 4:
            return f"the spatial scheme needs a 2-D conv (this one has {w.ndim - 2} spatial axes)"
        if x is None:
            return "static shapes unknown; cannot count MACs"
        r, full = matrix_ranks(conv_matrices(w, groups, scheme), rule)
        after = conv_macs(y, x, w.shape, groups, r, scheme)
        return Layer(node.name, node.op, node.input(idx), scheme, groups, r, full, before, after)
    ops = operands(node, lambda name: len(s) if (s := graph.shape(name)) is not None else None, idx)
    if ops is None:
        return "the activation is not a matrix (rank < 2)"
    r, full = matrix_ranks(w[None], rule)
    k, n = (w.shape[1], w.shape[0]) if ops.transposed else w.shape
    rows = int(np.prod(y, dtype=np.int64)) // n
    after = matmul_macs(rows, k, n, r)
    return Layer(node.name, node.op, node.input(idx), "matrix", 1, r, full, before, after)


"""SiPP (Baykal et al., arXiv 1910.05422): weight-level sensitivity pruning. It does NOT shrink shapes.

Every Conv / Gemm / MatMul with a constant weight gets per-weight sensitivities (max over calibration points
and patches of the relative contribution, :func:`graphprune.sensitivity.weight_sensitivity`). ``ratio`` is
the fraction of those layers' weights to set to zero:

* ``deterministic``: keep the global top ``(1 − ratio)`` of all weights by sensitivity;
* ``randomized``: per neuron (output unit f), draw m_f(ε) samples with p_e ∝ s_e, keep the drawn weights and
  scale them by count / (m_f p_e); m_f(ε) = ceil(3 (6 + 2ε) α_ℓ S_f / ε²) with one ε for all neurons, found by
  :func:`scipy.optimize.brentq` so the expected number of kept weights meets the budget;
* ``hybrid``: per neuron, with the same sample budget, whichever bound is smaller: the randomized one (ε) or
  the deterministic one (the sensitivity mass of the weights top-k leaves out, k = expected distinct draws).

Simplification against the authors' code: the positive and negative weights of a neuron share one
distribution (their sensitivities already use the matching z⁺ or z⁻) instead of being sampled separately.

The pass edits weight *values* in a copy of the model (shapes, names and every other initializer stay
as they were) and verifies itself: the output must equal the original with the same weights zeroed (and
scaled), built independently as ``Where`` / ``Mul`` nodes (:mod:`graphprune.verify.edits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from graphprune.methods.calib import batch_for, gather
from graphprune.channels.analysis import excluded_nodes
from graphprune.methods.edits import WeightEdit, apply_to_values
from graphprune.errors import UsageError
from graphprune.methods.sensitivity import DELTA, DELTA_S, alpha, epsilon_for, layers, points_needed, sample_size, tracked
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify import metadata
from graphprune.verify.claims import Claim, EditedWeights

MODES = ("deterministic", "randomized", "hybrid")


def distinct_rows(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per row: expected distinct entries drawn in m[row] draws from p[row]."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        miss = np.exp(m[:, None] * np.log1p(-np.minimum(p, 1.0)))
    miss = np.where(p > 0, np.nan_to_num(miss, nan=0.0), 1.0)
    return (1.0 - miss).sum(1)


@dataclass
class Neurons:
    """All neurons of one layer: sensitivities (rows, D), the layer's α."""

    weight: str
    shape: tuple[int, ...]
    layer: object
    s: np.ndarray
    alpha: float

    @property
    def totals(self) -> np.ndarray:
        return self.s.sum(1)

    @property
    def p(self) -> np.ndarray:
        t = self.totals[:, None]
        return np.divide(self.s, t, out=np.zeros_like(self.s), where=t > 0)

    def m(self, eps: float) -> np.ndarray:
        return sample_size(eps, self.alpha, self.totals)

    def expected(self, eps: float) -> np.ndarray:
        """Expected kept weights per neuron (at least one, at most the row's non-zero sensitivities)."""
        k = np.ceil(distinct_rows(self.p, self.m(eps)) - 1e-9)
        return np.clip(k, 1, self.s.shape[1])


@dataclass(frozen=True, kw_only=True)
class SiPPSparsify(Pass):
    ratio: float = 0.5
    mode: Literal["deterministic", "randomized", "hybrid"] = "deterministic"
    delta: float = DELTA
    max_points: int = 256
    batch_size: int = 32
    max_patches: int = 64
    exclude: tuple[str, ...] = ()
    seed: int = 0
    progress: bool | None = None
    requires = ("calib",)
    mutates = True
    runs_on = frozenset({"onnx"})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"sipp mode '{self.mode}' must be one of {', '.join(MODES)}")

    def call(self, state: PruneState) -> PassResult:
        measured = self.measure(state)
        if measured is None:
            return PassResult(state, modified=False, stats={"sparsity": 0.0, "notes": ["sipp: nothing to sparsify"]})
        neurons, needed, used = measured
        edits, eps = self.choose(neurons)
        total = sum(n.s.size for n in neurons)
        keeps = [np.broadcast_to(edits[n.weight].keep, n.shape) for n in neurons]
        model = apply_to_values(state.model, edits)
        metadata.write(model, edits=metadata.edits_entry(edits, any(e.scale is not None for e in edits.values()),
                                                         method="sipp", mode=self.mode))
        zeroed = sum(edits[n.weight].zeroed(n.shape) for n in neurons)
        per_layer = {n.layer.node: round(1.0 - float(k.mean()), 4) for n, k in zip(neurons, keeps)}
        stats = {"mode": self.mode, "sparsity": zeroed / max(total, 1), "weights": total, "zeroed": zeroed,
                 "layers": len(neurons), "per_layer_sparsity": per_layer, "epsilon": eps, "delta": self.delta,
                 "points_bound": needed, "points_used": used,
                 "notes": [f"sipp ({self.mode}): {zeroed / max(total, 1):.1%} of the {total} weights of "
                           f"{len(neurons)} Conv/Gemm/MatMul layers set to zero; shapes unchanged (unstructured "
                           "sparsity: params and MACs as counted densely do not change)"]}
        return PassResult(state.with_(model=model, weight_edits=edits), modified=True, stats=stats)

    def measure(self, state: PruneState) -> tuple[list[Neurons], int, int] | None:
        """Per-weight sensitivities of every layer, over the calibration points (None: nothing to do)."""
        graph = state.source.graph
        skip = excluded_nodes(graph, list(self.exclude))
        found = [lay for lay in layers(graph) if lay.node not in skip]
        if not found or self.ratio <= 0:
            return None
        eta = [int(np.prod(graph.shape(graph.node_by_name[lay.node].outputs[0])[1:], dtype=np.int64)) for lay in found]
        needed = points_needed(sum(eta), max(eta), DELTA_S)
        calib = state.calib.head(min(needed, self.max_points))
        trackers = tracked(found, graph.value, lambda on_batch: gather(
            state.source.model, list(dict.fromkeys(lay.x for lay in found)), calib, on_batch,
            input_shapes=state.source.input_shapes, batch_size=batch_for(graph, {lay.x for lay in found}, self.batch_size),
            progress=self.progress, description="SiPP sensitivity"),
            per_weight=True, max_patches=self.max_patches, seed=self.seed)
        neurons = [Neurons(t.layer.weight, tuple(graph.shape(t.layer.weight)), t.layer,
                           t.weight.reshape(-1, t.weight.shape[-1]).astype(np.float64),
                           alpha(t.layer.patches, t.layer.kappa, self.delta)) for t in trackers]
        return neurons, needed, calib.n_points

    def choose(self, neurons: list[Neurons]) -> tuple[dict[str, WeightEdit], float | None]:
        """The weight edits for ``ratio`` and ``mode`` from measured sensitivities (and ε, when sampled)."""
        total = sum(n.s.size for n in neurons)
        budget = int(round((1.0 - self.ratio) * total))
        eps = None
        if self.mode == "deterministic":
            keeps, scales = self.top_global(neurons, budget), [None] * len(neurons)
        else:
            eps = self.solve(neurons, budget)
            keeps, scales = self.sample(neurons, eps)
        edits = {}
        for n, keep, scale in zip(neurons, keeps, scales):
            mshape = matrix_shape(n)
            keep_w = n.layer.unmatrix(keep.reshape(mshape), n.shape).astype(bool)
            scale_w = None if scale is None else n.layer.unmatrix(scale.reshape(mshape), n.shape).astype(np.float32)
            edits[n.weight] = WeightEdit(keep_w, scale_w)
        return edits, eps

    @staticmethod
    def top_global(neurons: list[Neurons], budget: int) -> list[np.ndarray]:
        flat = np.concatenate([n.s.ravel() for n in neurons])
        keep = np.zeros(flat.size, bool)
        keep[np.argsort(-flat, kind="stable")[:budget]] = True
        out, pos = [], 0
        for n in neurons:
            out.append(keep[pos:pos + n.s.size].reshape(n.s.shape))
            pos += n.s.size
        return out

    @staticmethod
    def solve(neurons: list[Neurons], budget: int) -> float:
        """One ε for all neurons: expected kept weights = ``budget`` (nearest side of the step)."""
        def kept(log_eps: float) -> float:
            return float(sum(n.expected(10.0 ** log_eps).sum() for n in neurons))

        lo, hi = -30.0, 30.0
        if kept(lo) <= budget:
            return 10.0 ** lo
        if kept(hi) >= budget:
            return 10.0 ** hi
        root = brentq(lambda x: kept(x) - budget, lo, hi, xtol=1e-12, maxiter=500)
        best = min((root - 1e-9, root, root + 1e-9), key=lambda x: abs(kept(x) - budget))
        return 10.0 ** best

    def sample(self, neurons: list[Neurons], eps: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        keeps, scales = [], []
        for n in neurons:
            p, totals = n.p, n.totals
            m = n.m(eps)
            m_int = np.where(np.isfinite(m) & (m < 1e12), m, 1e12).astype(np.int64)
            m_int = np.where(totals > 0, m_int, 0)
            counts = rng.multinomial(m_int, np.where(totals[:, None] > 0, p, 1.0 / p.shape[1]))
            keep = counts > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(keep, counts / (m_int[:, None] * p), 1.0)
            if self.mode == "hybrid":
                k = n.expected(eps).astype(np.int64)
                order = np.argsort(-n.s, axis=1, kind="stable")
                ranks = np.argsort(order, axis=1, kind="stable")
                top = ranks < k[:, None]
                det_err = np.where(top, 0.0, n.s).sum(1)
                rand_err = epsilon_for(np.maximum(m_int, 1), n.alpha, totals)
                use_det = det_err <= rand_err
                keep = np.where(use_det[:, None], top, keep)
                scale = np.where(use_det[:, None], 1.0, scale)
            keeps.append(keep)
            scales.append(scale)
        return keeps, scales

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        """The output equals the model before this pass with the same weights zeroed (and scaled)."""
        return EditedWeights(after.weight_edits or {})


def matrix_shape(n: Neurons) -> tuple[int, ...]:
    """The (groups, filters per group, D) shape the layer's matrix has."""
    lay = n.layer
    if lay.op == "Conv":
        f = n.shape[0]
        return (lay.groups, f // lay.groups, n.s.shape[1])
    return (1, n.s.shape[0], n.s.shape[1])

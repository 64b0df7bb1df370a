"""What a verification says, how outputs are compared, and how stage results combine into one.

Every oracle (masked original, edited weights, truncated low rank, torch) ends in :func:`close` against its own
expected outputs and returns a :class:`Verification`; drift against the unpruned original is measured, never
asserted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class Drift:
    """Pruned vs unpruned outputs on the verification batch."""

    max_abs: float
    cosine: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Verification:
    ok: bool
    checks: Mapping[str, str] = field(default_factory=dict)  # check name -> "ok", "skipped: why", or what failed
    max_error: float = 0.0  # largest |pruned − masked original|
    drift: Drift | None = None

    @property
    def failure(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.checks.items() if not passed(v))


SKIPPED = "skipped: "  # a check that could not run (e.g. a module that does not export to ONNX), said so
WITHIN_ROUNDING = "ok: "  # passed only once the oracle's own float rounding was allowed for (see :func:`close`)


def passed(status: str) -> bool:
    """A check's status is no failure: it passed (plainly, or within rounding, saying so), or it could not run and
    says why."""
    return status == "ok" or status.startswith((SKIPPED, WITHIN_ROUNDING))


def drift(reference: list[np.ndarray], pruned: list[np.ndarray]) -> Drift:
    a = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    b = np.concatenate([np.asarray(p, np.float64).ravel() for p in pruned])
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    top1 = None
    first_ref, first_new = reference[0], pruned[0]
    if first_ref.ndim == 2 and first_ref.shape[1] > 1 and np.issubdtype(first_ref.dtype, np.floating):
        top1 = float(np.mean(first_ref.argmax(1) == first_new.argmax(1)))
    return Drift(max_abs, cosine, top1)


LOW_PRECISION = {np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}  # ml_dtypes comes with onnx


ROUNDING_FACTOR = 4.0  # how many times the oracle's own evaluation spread an error may reach (see close)


def close(expected: list[np.ndarray], got: list[np.ndarray], rtol: float, atol: float,
          noise: Sequence[float] | None = None) -> tuple[bool, float]:
    """Element-wise |got − expected| ≤ atol·max(1, max|finite expected|) + rtol·|expected| (+ ``noise[i]`` on
    output i) on every output; a NaN or an infinity matches only the same non-finite value at the same place.

    ``noise``: the float rounding of the oracle itself, allowed for on top. A fixed rtol / atol on the outputs
    cannot know how much an internal computation amplifies rounding: a PP-OCR recogniser's masked original
    (attention, LayerNorms over pruned channels written out) gives outputs that differ by 6.7e-05 between two
    equally valid onnxruntime evaluations of the *same* oracle (graph optimisations on and off), more than atol,
    and a right pruned model differs from it by 7.4e-05. :func:`rounding_spread` measures that spread; the
    callers allow ``ROUNDING_FACTOR`` times it, and a real coupling error (of the order of the activations)
    stays far above."""
    worst, ok = 0.0, True
    for i, (e, g) in enumerate(zip(expected, got)):
        if e.shape != g.shape:
            return False, float("inf")
        if e.dtype in LOW_PRECISION:  # half-precision sums reassociate far above 1e-4
            rtol, atol = max(rtol, 1e-2), max(atol, 1e-3)
        e64, g64 = np.asarray(e, np.float64), np.asarray(g, np.float64)
        finite = np.isfinite(e64) & np.isfinite(g64)
        same_nonfinite = (np.isnan(e64) & np.isnan(g64)) | (np.isinf(e64) & (e64 == g64))
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.where(finite, np.abs(e64 - g64), 0.0)
        scale = max(1.0, float(np.max(np.abs(e64[finite])))) if finite.any() else 1.0
        allowed = atol * scale + rtol * np.abs(np.where(finite, e64, 0.0)) + (noise[i] if noise is not None else 0.0)
        within = finite & (err <= allowed)
        ok &= bool(np.all(within | same_nonfinite))
        worst = max(worst, float(err.max()) if err.size else 0.0, 0.0 if np.all(finite | same_nonfinite) else float("inf"))
    return ok, worst


def rounding_spread(first: list[np.ndarray], second: list[np.ndarray]) -> list[float]:
    """Per output: the largest finite |first − second| of two evaluations of one model (0 where none is finite)."""
    out = []
    for a, b in zip(first, second):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        finite = np.isfinite(a64) & np.isfinite(b64)
        out.append(float(np.max(np.abs(a64 - b64)[finite])) if finite.any() and a64.shape == b64.shape else 0.0)
    return out


@dataclass(frozen=True)
class Tolerance:
    """How outputs are compared (:func:`close`) and which seeded inputs they are compared on."""

    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0


def combine(results: Sequence[tuple[str, Verification]], final_drift: Callable[[], Drift]) -> Verification:
    """One verification from the stages' ones (each check named ``stage/check``; the channel stage, labelled
    ``""``, keeps bare names). One stage is returned as it is; otherwise the drift is the final model's against
    the unpruned original (``final_drift``), measured only when every stage passed."""
    if len(results) == 1:
        return results[0][1]
    checks = {(f"{stage}/{k}" if stage else k): v for stage, res in results for k, v in res.checks.items()}
    ok = all(res.ok for _, res in results)
    worst = max((res.max_error for _, res in results), default=0.0)
    return Verification(ok, checks, worst, final_drift() if ok and results else None)

"""Verification: the emitted model is right when it equals the masked original.

Pruning changes outputs by design, so "verified" means: the emitted model passes the full ONNX checker,
runs in onnxruntime, keeps the interface, and computes exactly what the original computes when every removed
unit is set to zero where it lives (every computed tensor of a pruned space is passed through
``Where(mask, t, 0)``, every weight is zeroed in its data). That checks every coupling, slice and shape fix independently of which scoring method
chose the channels. Drift against the unpruned original is measured, not asserted.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.errors import ModelLoadError, VerificationError
from graphprune.frontends.onnx.load import LoadedModel, Signature, signature, skeleton
from graphprune.gsgraph import export_like, reroute
from graphprune.io import Stripped, holds_data
from graphprune.channels.plan import Plan
from graphprune.runtime import Runnable, check_model, run, runnable, seeded_inputs, session


@dataclass(frozen=True)
class Drift:
    """Pruned vs unpruned outputs on the verification batch."""

    max_abs: float
    cosine: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Verification:
    ok: bool
    checks: Mapping[str, str] = field(default_factory=dict)  # check name -> "ok" or what failed
    max_error: float = 0.0  # largest |pruned − masked original|
    drift: Drift | None = None

    @property
    def failure(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.checks.items() if v != "ok")


def masked_model(model: onnx.ModelProto, plan: Plan) -> Stripped:
    """The original with every pruned atom forced to zero right where its tensor is produced: a computed tensor
    through ``Where(keep, t, 0)``, a constant in its data. Built on the :func:`skeleton` of ``model``, whose
    large initializers are read from ``model`` (and masked) one at a time as the oracle is written out, so the
    oracle never holds a second copy of the weights."""
    light = skeleton(model)
    stripped = {t.name for t in light.graph.initializer if not holds_data(t)}
    g = gs.import_onnx(light)
    tensors = g.tensors()
    edits = {}
    for name, keep in keep_masks(plan, lambda name: len(tensors[name].shape)).items():
        t = tensors[name]
        if name in stripped:
            edits[name] = functools.partial(zeroed, keep=keep)
        elif isinstance(t, gs.Constant):
            t.values = zeroed(np.asarray(t.values), keep)
        else:
            masked = gs.Variable(f"{name}::masked", dtype=t.dtype, shape=t.shape)
            consumers = list(t.outputs)
            g.nodes.append(mask_node(name, t, keep, t.dtype, masked))
            reroute(consumers, t, masked)
    g.toposort()
    return Stripped.over(export_like(g, model), model, edits)


def keep_masks(plan: Plan, rank_of: Callable[[str], int]) -> dict[str, np.ndarray]:
    """Tensor → boolean array of its rank, broadcastable to it, False at the atoms ``plan`` removes (on any of
    its axes)."""
    axes_of: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for space in plan.keep:
        if not space.virtual:
            axes_of[space.tensor].append((space.axis, plan.removed_mask(space)))
    masks = {}
    for name, axes in axes_of.items():
        rank = rank_of(name)
        keep = np.ones([1] * rank, bool)
        for axis, removed in axes:
            shape = [1] * rank
            shape[axis] = len(removed)
            keep = keep & ~removed.reshape(shape)
        masks[name] = keep
    return masks


def zeroed(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` with zeros where ``keep`` is False: exactly what ``Where(keep, values, 0)`` computes."""
    return np.where(keep, values, np.zeros((), values.dtype))


def mask_node(name: str, t: gs.Tensor, keep: np.ndarray, dtype, out: gs.Variable) -> gs.Node:
    """``Where(keep, t, 0)``; for booleans ``And(t, keep)`` (onnxruntime has no boolean Where)."""
    keep_c = gs.Constant(f"{name}::keep", keep)
    if np.dtype(dtype) == np.bool_:
        return gs.Node("And", f"{name}::mask", inputs=[t, keep_c], outputs=[out])
    zero = gs.Constant(f"{name}::zero", np.zeros((), dtype=dtype))
    return gs.Node("Where", f"{name}::mask", inputs=[keep_c, t, zero], outputs=[out])


def interface_problems(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                       declared: Signature | None = None) -> list[str]:
    """Differences in input / output names, element types and shapes from ``reference``'s; with ``declared``
    (the original's signature, dynamic dimensions included) a candidate that has exactly that one passes too."""
    got = signature(candidate)
    if declared is not None and got == declared:
        return []
    ref = signature(reference)
    return [f"{kind}s differ: {ref[kind]} vs {got[kind]}" for kind in ("input", "output") if ref[kind] != got[kind]]


def structural_checks(reference: onnx.ModelProto, candidate: onnx.ModelProto, on_disk: Runnable | None = None,
                      declared: Signature | None = None) -> dict[str, str]:
    """The full ONNX checker on ``candidate`` (read from ``on_disk``, its :func:`runnable` form, when given) and
    its interface against ``reference`` (or the ``declared`` one): "ok" or what failed."""
    checks: dict[str, str] = {}
    try:
        check_model(candidate if on_disk is None else on_disk, full_check=True)
        checks["checker"] = "ok"
    except Exception as exc:
        checks["checker"] = str(exc).splitlines()[0]
    problems = interface_problems(reference, candidate, declared)
    checks["interface"] = "ok" if not problems else "; ".join(problems)
    return checks


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


def close(expected: list[np.ndarray], got: list[np.ndarray], rtol: float, atol: float) -> tuple[bool, float]:
    """Element-wise |got − expected| ≤ atol·max(1, max|finite expected|) + rtol·|expected| on every output; a NaN
    or an infinity matches only the same non-finite value at the same place."""
    worst, ok = 0.0, True
    for e, g in zip(expected, got):
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
        within = finite & (err <= atol * scale + rtol * np.abs(np.where(finite, e64, 0.0)))
        ok &= bool(np.all(within | same_nonfinite))
        worst = max(worst, float(err.max()) if err.size else 0.0, 0.0 if np.all(finite | same_nonfinite) else float("inf"))
    return ok, worst


def compare_with_oracle(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                        oracle: Callable[[], onnx.ModelProto | Stripped] | None,
                        feeds: Mapping[str, np.ndarray], *, label: str, what: str, interface: onnx.ModelProto | None = None,
                        rtol: float = 1e-4, atol: float = 1e-5, extra: Mapping[str, str] | None = None,
                        declared: Signature | None = None) -> Verification:
    """The shared shape of every verification: structural checks, ``candidate`` runs, and its outputs equal the
    ``oracle`` model's (built lazily, whole or :class:`Stripped`; ``None``: the reference itself) within tolerance; drift is measured against ``reference``. ``label`` names the oracle
    check, ``what`` describes the difference it measures. One onnxruntime session is alive at a time."""
    reference_out = reference_outputs(reference, feeds)
    with runnable(candidate) as on_disk:
        checks = structural_checks(interface if interface is not None else reference, candidate, on_disk, declared)
        checks.update(extra or {})
        try:
            got = run(session(on_disk, once=True), feeds)
            checks["onnxruntime"] = "ok"
        except VerificationError as exc:
            checks["onnxruntime"] = str(exc)
            return Verification(False, checks)
    if oracle is None:
        expected = reference_out
    else:
        with runnable(oracle()) as masked:
            expected = run(session(masked, once=True), feeds)
    ok, worst = close(expected, got, rtol, atol)
    checks[label] = "ok" if ok else f"max |{what}| = {worst:.3g} exceeds rtol {rtol}, atol {atol}"
    return Verification(all(v == "ok" for v in checks.values()), checks, worst, drift(reference_out, got))


def reference_outputs(reference: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """What the model before pruning computes on ``feeds``; it must run and output some finite number."""
    try:
        out = run(session(reference, once=True), feeds)
    except VerificationError as exc:
        hint = ("; onnxruntime has no kernel for that op and element type here (e.g. bfloat16 on the CPU provider): "
                "verify on a provider that has one, or pass --verify off / verify='off' to prune unverified"
                if "NOT_IMPLEMENTED" in str(exc) else "")
        raise ModelLoadError(f"the original model does not run, so nothing can be verified against it: {exc}{hint}") from exc
    if any(o.size and not np.isfinite(np.asarray(o, np.float64)).any() for o in out
           if np.issubdtype(np.asarray(o).dtype, np.number)):
        raise ModelLoadError("the original model outputs only NaN or infinity on the seeded inputs, so a pruned "
                             "model cannot be verified against it; check the model (e.g. a normalisation epsilon)")
    return out


def verify(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan, *, rtol: float = 1e-4, atol: float = 1e-5,
           seed: int = 0) -> Verification:
    """Run every check; never raises for a failed check (the caller decides), only reports it."""
    feeds = seeded_inputs(source.model, source.input_shapes, seed)
    oracle = None if plan.empty else (lambda: masked_model(source.model, plan))
    return compare_with_oracle(source.model, pruned, oracle, feeds, label="masked_original",
                               what="pruned - masked original", rtol=rtol, atol=atol, declared=source.declared)

"""The shared shape of every ONNX verification: the full checker, the interface, the candidate runs in
onnxruntime, and its outputs equal an oracle model's on seeded inputs (:func:`compare_with_oracle`)."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import onnx

from graphprune.errors import ModelLoadError, VerificationError
from graphprune.frontends.onnx.proto import Signature, signature
from graphprune.io import Stripped
from graphprune.runtime import Runnable, check_model, run, runnable, seeded_inputs, session
from graphprune.verify.exact import exact_integer_linear
from graphprune.verify.result import (ROUNDING_FACTOR, WITHIN_ROUNDING, Verification, close, drift, passed,
                                      rounding_spread)


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


def compare_with_oracle(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                        oracle: Callable[[], onnx.ModelProto | Stripped] | None,
                        feeds: Mapping[str, np.ndarray], *, label: str, what: str, interface: onnx.ModelProto | None = None,
                        rtol: float = 1e-4, atol: float = 1e-5, extra: Mapping[str, str] | None = None,
                        declared: Signature | None = None,
                        written_out: Callable[[], onnx.ModelProto | Stripped] | None = None) -> Verification:
    """The shared shape of every verification: structural checks, ``candidate`` runs, and its outputs equal the
    ``oracle`` model's (built lazily, whole or :class:`Stripped`; ``None``: the reference itself) within
    tolerance; drift is measured against ``reference``. ``label`` names the oracle check, ``what`` describes the
    difference it measures. One onnxruntime session is alive at a time.

    Where the outputs are not within rtol / atol, the oracle's own float rounding is allowed for
    (:func:`graphprune.verify.result.close`): the larger of how far its outputs move when evaluated without graph
    optimisations, and how far ``written_out`` (the reference written the way the oracle is, e.g. its
    normalisations as explicit ops, with nothing removed: equal to it in exact arithmetic) is from the reference."""
    reference_out = reference_outputs(exact_integer_linear(reference), feeds)  # verify/exact.py
    with runnable(candidate) as on_disk:
        checks = structural_checks(interface if interface is not None else reference, candidate, on_disk, declared)
        checks.update(extra or {})
        try:
            got = run(session(on_disk, once=True), feeds)
            checks["onnxruntime"] = "ok"
        except VerificationError as exc:
            checks["onnxruntime"] = str(exc)
            return Verification(False, checks)
    if (exact := exact_integer_linear(candidate)) is not candidate:  # compared written out exactly (verify/exact.py)
        with runnable(exact) as on_disk:
            got = run(session(on_disk, once=True), feeds)
    if oracle is None:
        expected = reference_out
        ok, worst = close(expected, got, rtol, atol)
        spread = None if ok else unoptimised_spread(reference, expected, feeds)
    else:
        with runnable(exact_integer_linear(oracle())) as masked:
            expected = run(session(masked, once=True), feeds)
            ok, worst = close(expected, got, rtol, atol)
            spread = None if ok else unoptimised_spread(masked, expected, feeds)
    if not ok and written_out is not None:
        with runnable(written_out()) as rewritten:
            spread = [max(a, b) for a, b in zip(spread, rounding_spread(reference_out, run(session(rewritten, once=True), feeds)))]
    if ok:
        checks[label] = "ok"
    elif close(expected, got, rtol, atol, [ROUNDING_FACTOR * s for s in spread])[0]:
        checks[label] = (f"{WITHIN_ROUNDING}max |{what}| = {worst:.3g} is within {ROUNDING_FACTOR:g}× the "
                         f"oracle's own float rounding (equivalent evaluations of it differ by up to {max(spread):.3g})")
    else:
        checks[label] = f"max |{what}| = {worst:.3g} exceeds rtol {rtol}, atol {atol}" + (
            f" and {ROUNDING_FACTOR:g}× the oracle's own float rounding ({max(spread):.3g})" if max(spread) > 0 else "")
    return Verification(all(passed(v) for v in checks.values()), checks, worst, drift(reference_out, got))


def unoptimised_spread(model: Runnable, expected: list[np.ndarray], feeds: Mapping[str, np.ndarray]) -> list[float]:
    """The oracle's own float rounding: how far its ``expected`` outputs move when onnxruntime evaluates it without
    graph optimisations (no fusions, other kernels, other summation orders); asked only when a check failed."""
    return rounding_spread(expected, run(session(model, optimize=False, once=True), feeds))


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


def verify_same(before: onnx.ModelProto, after: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], *,
                label: str = "equals_input", what: str = "rewritten - input", rtol: float = 1e-3, atol: float = 1e-4,
                seed: int = 0) -> Verification:
    """A value-preserving rewrite: ``after`` passes the checker and equals ``before`` within tolerance on seeded
    inputs (folding BatchNorm changes float rounding, hence the looser default)."""
    feeds = seeded_inputs(before, shapes, seed)
    return compare_with_oracle(before, after, None, feeds, label=label, what=what, rtol=rtol, atol=atol)

"""Verification of the low-rank pass: the decomposed model is right when it equals the truncated original.

Decomposition changes outputs by design (at rank r < full), so, like channel pruning, it is checked against an
oracle built independently of the surgery:

1. checker (full), onnxruntime, and the interface of the source model (names, dtypes, shapes);
2. **full rank**: the same layers decomposed at full rank compute what the model before the pass computes
   (this checks the surgery — strides, pads, dilations, groups, transposes, bias — without any truncation);
3. **truncated original**: the decomposed model computes what the model before the pass computes once each
   decomposed weight is replaced, in a copy of that model, by its rank-r approximation U_r S_r V_rᵀ.

Both comparisons run in onnxruntime on seeded inputs with :func:`graphprune.verify.close`.

**Dynamic dimensions** (:func:`restore_dynamic`): decomposition runs on the model pinned at the analysed shapes,
as channel removal does, so it gets the original's dynamic dimensions back the same way
(:mod:`graphprune.verify.dynamic`): only once, at a second size, the model before decomposition is shown right
there and the relaxed decomposed model equals the relaxed truncated original.
"""

from __future__ import annotations

from typing import Mapping

import onnx
from onnx import numpy_helper

from graphprune.channels.plan import Plan
from graphprune.emit.lowrank import decompose_model
from graphprune.errors import GraphPruneError, VerificationError
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.frontends.onnx.proto import Signature, skeleton
from graphprune.io import Stripped
from graphprune.methods.lowrank import Layer
from graphprune.runtime import run, seeded_inputs, session
from graphprune.verify import metadata
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.dynamic import Restored, dynamic_axes, outputs, relaxed, restore, second_shapes
from graphprune.verify.result import Tolerance, Verification, close


def layers_of(model: onnx.ModelProto) -> list[Layer]:
    """The decomposed layers recorded in ``model``'s metadata (empty when it holds none)."""
    return list(metadata.read(model).lowrank)


def truncated_original(model: onnx.ModelProto, layers) -> onnx.ModelProto:
    """A copy of ``model`` with each decomposed weight replaced by its truncated approximation."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for layer in layers:
        if layer.weight not in inits:
            raise VerificationError(f"layer {layer.node}: weight '{layer.weight}' is not an initializer of the "
                                    f"model before decomposition")
        t = inits[layer.weight]
        t.CopyFrom(numpy_helper.from_array(layer.truncated(numpy_helper.to_array(t)), t.name))
    return out


def verify_lowrank(before: onnx.ModelProto, after: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], *,
                   interface: onnx.ModelProto | None = None, layers=None, rtol: float = 1e-4, atol: float = 1e-5,
                   seed: int = 0, full_rank: bool = True, declared: Signature | None = None) -> Verification:
    """Check ``after`` (the output of the low-rank pass on ``before``); never raises for a failed check.
    ``declared``: the original's signature, which ``after`` may have instead of the interface's static one (a file
    whose dynamic dimensions were restored)."""
    layers = layers_of(after) if layers is None else layers
    feeds = seeded_inputs(before, input_shapes, seed)
    extra = {"full_rank": full_rank_check(before, layers, feeds, rtol, atol)} if full_rank and layers else {}
    oracle = (lambda: truncated_original(before, layers)) if layers else None
    try:
        return compare_with_oracle(before, after, oracle, feeds, label="truncated_original",
                                   what="decomposed - truncated original", interface=interface, rtol=rtol, atol=atol,
                                   extra=extra, declared=declared)
    except VerificationError as exc:  # the truncated original could not be built or run
        return Verification(False, {**extra, "truncated_original": str(exc)})


def full_rank_check(before: onnx.ModelProto, layers, feeds, rtol: float, atol: float) -> str:
    """At full rank the decomposition must equal the layer it replaces: "ok" or what differs."""
    try:
        full = run(session(decompose_model(before, layers, full_rank=True), once=True), feeds)
        ok, err = close(run(session(before, once=True), feeds), full, rtol, atol)
        return "ok" if ok else f"max |full-rank decomposition - original| = {err:.3g}"
    except Exception as exc:
        return f"cannot build the full-rank decomposition: {str(exc).splitlines()[0]}"


# --------------------------------------------------------------------------- dynamic dimensions


def restore_dynamic(source: LoadedModel, before: onnx.ModelProto, pruned: onnx.ModelProto, layers: list[Layer],
                    plan: Plan | None, tol: Tolerance, *, later: tuple[str, ...] = ()) -> Restored:
    """Give ``pruned`` (``before`` with ``layers`` decomposed, verified at the analysed shapes; edited in place
    when it passes) the original's dynamic dimensions, as :func:`graphprune.verify.dynamic.restore` does for
    channel removal: at a second size (every dynamic dimension changed) the model before decomposition must be
    right (:func:`dynamic_before`) and the relaxed decomposed model must equal its relaxed truncated original.
    Where only a model folded without pinning is right there, the layers are decomposed again on it (``later``:
    the stages after low rank, which that cannot replay). ``plan``: the channel stage before, if any."""
    axes = dynamic_axes(source)
    shapes = second_shapes(source, axes)
    where = ", ".join(f"{name}[{','.join(map(str, a))}]" for name, a in axes.items())
    static = static_note(source)
    feeds = seeded_inputs(source.model, shapes, tol.seed)
    base = dynamic_before(source, before, plan, tol)
    if isinstance(base, Restored):
        return base
    again = base is not before
    if again and later:
        return Restored(False, f"{static}: its dynamic {where} need the layers decomposed again on the model folded "
                               f"without pinning them, which cannot replay {', '.join(later)}")
    candidate = redecomposed(source, base, pruned, layers, tol) if again else pruned
    if candidate is None:
        return Restored(False, f"{static}: decomposing the model folded without pinning its dynamic {where} did not "
                               f"verify")
    oracle = relaxed(truncated_original(base, layers), source.declared)
    expected = outputs(Stripped.over(skeleton(oracle), oracle), feeds)
    got = outputs(Stripped.over(relaxed(skeleton(candidate), source.declared), candidate), feeds)
    if expected is None or got is None or not close(expected, got, tol.rtol, tol.atol)[0]:
        return Restored(False, f"{static}: with its dynamic {where} relaxed it is not equal to the truncated "
                               f"original at {shapes}")
    relaxed(candidate, source.declared)
    how = " (decomposed on the model folded without pinning them)" if again else ""
    return Restored(True, f"dynamic {where} kept{how}: verified at {dict(source.input_shapes)} and at {shapes}",
                    candidate if again else None)


def static_note(source: LoadedModel) -> str:
    return f"the decomposed model keeps the analysed input shapes {dict(source.input_shapes)}"


def dynamic_before(source: LoadedModel, before: onnx.ModelProto, plan: Plan | None, tol: Tolerance
                   ) -> onnx.ModelProto | Restored:
    """The model before decomposition, shown right at the second size: ``before`` itself, or an equivalent emitted
    on the original folded without pinning its dynamic dimensions where folding fixed them; or the failed
    :class:`Restored` saying why neither. This is the channel path's own check (:func:`restore`, on a copy: it
    relaxes what passes) of ``before`` against ``plan``, the empty plan when decomposition runs alone, so both
    paths decide alike which folded models hold at other sizes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(before)
    checked = restore(source, copy, plan if plan is not None else Plan({}, {}, {}), rtol=tol.rtol, atol=tol.atol,
                      seed=tol.seed)
    if not checked.dynamic:
        return checked
    return before if checked.model is None else checked.model


def redecomposed(source: LoadedModel, base: onnx.ModelProto, pruned: onnx.ModelProto, layers: list[Layer],
                 tol: Tolerance) -> onnx.ModelProto | None:
    """``layers`` decomposed on ``base`` (a model with dynamic dimensions, equal to the one they were chosen on),
    with ``pruned``'s metadata; None unless it verifies against ``base`` at the analysed shapes."""
    try:
        candidate = decompose_model(base, layers)
    except (GraphPruneError, KeyError, AttributeError, TypeError, ValueError):  # a layer that is not there
        return None
    del candidate.metadata_props[:]
    candidate.metadata_props.extend(pruned.metadata_props)
    v = verify_lowrank(base, candidate, source.input_shapes, layers=layers, rtol=tol.rtol, atol=tol.atol,
                       seed=tol.seed, declared=source.declared)
    return candidate if v.ok else None

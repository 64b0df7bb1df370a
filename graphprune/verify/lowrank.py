"""Verification of the low-rank pass: the decomposed model is right when it equals the truncated original.

Decomposition changes outputs by design (at rank r < full), so, like channel pruning, it is checked against an
oracle built independently of the surgery:

1. checker (full), onnxruntime, and the interface of the source model (names, dtypes, shapes);
2. **full rank**: the same layers decomposed at full rank compute what the model before the pass computes
   (this checks the surgery — strides, pads, dilations, groups, transposes, bias — without any truncation);
3. **truncated original**: the decomposed model computes what the model before the pass computes once each
   decomposed weight is replaced, in a copy of that model, by its rank-r approximation U_r S_r V_rᵀ.

Both comparisons run in onnxruntime on seeded inputs with :func:`graphprune.verify.close`.
"""

from __future__ import annotations

from typing import Mapping

import onnx
from onnx import numpy_helper

from graphprune.emit.lowrank import decompose_model
from graphprune.errors import VerificationError
from graphprune.methods.lowrank import Layer
from graphprune.runtime import run, seeded_inputs, session
from graphprune.verify import metadata
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.result import Verification, close



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
                   seed: int = 0, full_rank: bool = True) -> Verification:
    """Check ``after`` (the output of the low-rank pass on ``before``); never raises for a failed check."""
    layers = layers_of(after) if layers is None else layers
    feeds = seeded_inputs(before, input_shapes, seed)
    extra = {"full_rank": full_rank_check(before, layers, feeds, rtol, atol)} if full_rank and layers else {}
    oracle = (lambda: truncated_original(before, layers)) if layers else None
    try:
        return compare_with_oracle(before, after, oracle, feeds, label="truncated_original",
                                   what="decomposed - truncated original", interface=interface, rtol=rtol, atol=atol,
                                   extra=extra)
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

"""The oracle of value-only passes (SiPP zeroing, PFP reweighting): the output equals its input with the same
weight entries zeroed and scaled, rebuilt independently as ``Where(keep, W · scale, 0)`` nodes in the graph, and
every other initializer is bit-identical."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from graphprune.errors import InternalError
from graphprune.gsgraph import export_like, reroute
from graphprune.methods.edits import WeightEdit
from graphprune.runtime import seeded_inputs
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.result import Tolerance, Verification


def edited_model(model: onnx.ModelProto, edits: Mapping[str, WeightEdit]) -> onnx.ModelProto:
    """The verification oracle: ``model`` with each edited weight routed through ``Where(keep, W·scale, 0)``.

    The initializers themselves are untouched, so this is built independently of :func:`apply_to_values`.
    """
    if not edits:
        return model
    g = gs.import_onnx(model)
    tensors = g.tensors()
    for name, edit in edits.items():
        t = tensors.get(name)
        if not isinstance(t, gs.Constant):
            raise InternalError(f"weight edit names '{name}', which is not a constant of the model")
        dtype = np.asarray(t.values).dtype
        consumers = list(t.outputs)
        source: gs.Tensor = t
        if edit.scale is not None:
            scaled = gs.Variable(f"{name}::scaled", dtype=dtype, shape=t.shape)
            g.nodes.append(gs.Node("Mul", f"{name}::scale", inputs=[t, gs.Constant(f"{name}::factor", edit.scale.astype(dtype))],
                                   outputs=[scaled]))
            source = scaled
        edited = gs.Variable(f"{name}::edited", dtype=dtype, shape=t.shape)
        zero = gs.Constant(f"{name}::zero", np.zeros((), dtype=dtype))
        g.nodes.append(gs.Node("Where", f"{name}::keep", inputs=[gs.Constant(f"{name}::kept", np.asarray(edit.keep, bool)),
                                                                 source, zero], outputs=[edited]))
        reroute(consumers, t, edited)
    g.toposort()
    return export_like(g, model)


def verify_edits(before: onnx.ModelProto, after: onnx.ModelProto, edits: Mapping[str, WeightEdit],
                 input_shapes: Mapping[str, tuple[int, ...]], *, interface: onnx.ModelProto | None = None,
                 rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> Verification:
    """Check a value-only pass: ``after`` computes what ``before`` computes with ``edits`` applied as graph nodes
    (:func:`edited_model`), every other initializer is bit-identical, and no shape changed. Never raises for a
    failed check; returns a :class:`Verification`."""
    feeds = seeded_inputs(before, input_shapes, seed)
    return compare_with_oracle(before, after, lambda: edited_model(before, edits), feeds, label="edited_original",
                               what="edited model - original with the same weights edited", interface=interface,
                               rtol=rtol, atol=atol, extra={"weights": weight_problems(before, after, edits) or "ok"})


def weight_problems(before: onnx.ModelProto, after: onnx.ModelProto, edits: Mapping[str, WeightEdit]) -> str:
    """'' when only the edited initializers changed, none changed shape, and none was added or dropped."""
    a = {t.name: t for t in before.graph.initializer}
    b = {t.name: t for t in after.graph.initializer}
    if set(a) != set(b):
        return f"initializers added or dropped: {sorted(set(a) ^ set(b))[:3]}"
    for name, t in a.items():
        if tuple(t.dims) != tuple(b[name].dims):
            return f"'{name}' changed shape {tuple(t.dims)} -> {tuple(b[name].dims)}"
        if name not in edits and not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(b[name])):
            return f"'{name}' changed, but no edit names it"
    return ""

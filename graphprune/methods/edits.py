"""Weight edits: passes that change weight *values* without changing shapes (SiPP zeroing, PFP reweighting).

A :class:`WeightEdit` says, for one initializer, which entries are kept (the others become 0) and by how much
the kept ones are scaled. Passes apply edits to initializer values (:func:`apply_to_values`); verification
rebuilds the same change independently, as ``Where(keep, W · scale, 0)`` nodes in the graph
(:func:`edited_model`), so a pass that zeroed or scaled the wrong entries is caught by comparing outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from graphprune.errors import InternalError
from graphprune.gsgraph import export_like, reroute


@dataclass(frozen=True, eq=False)
class WeightEdit:
    """``keep``: bool array broadcastable to the weight (False → 0); ``scale``: float array broadcastable to it,
    or None for 1."""

    keep: np.ndarray
    scale: np.ndarray | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        out = values if self.scale is None else values * self.scale.astype(values.dtype)
        return np.where(self.keep, out, np.zeros((), values.dtype)).astype(values.dtype)

    def zeroed(self, shape: tuple[int, ...]) -> int:
        """How many entries of a weight of ``shape`` this edit sets to zero."""
        return int((~np.broadcast_to(self.keep, shape)).sum())


def apply_to_values(model: onnx.ModelProto, edits: Mapping[str, WeightEdit]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``edits`` hold the edited values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = set()
    for init in out.graph.initializer:
        if init.name in edits:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(edits[init.name].apply(values), init.name))
            found.add(init.name)
    missing = sorted(set(edits) - found)
    if missing:
        raise InternalError(f"weight edits name {missing[:3]}, which are not initializers of the model")
    return out


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


def sparsity(model: onnx.ModelProto, names) -> tuple[int, int]:
    """(zero entries, total entries) over the initializers ``names`` of ``model``."""
    names = set(names)
    zeros = total = 0
    for init in model.graph.initializer:
        if init.name in names:
            v = numpy_helper.to_array(init)
            zeros += int((v == 0).sum())
            total += int(v.size)
    return zeros, total


def verify_edits(before: onnx.ModelProto, after: onnx.ModelProto, edits: Mapping[str, WeightEdit],
                 input_shapes: Mapping[str, tuple[int, ...]], *, interface: onnx.ModelProto | None = None,
                 rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0):
    """Check a value-only pass: ``after`` computes what ``before`` computes with ``edits`` applied as graph nodes
    (:func:`edited_model`), every other initializer is bit-identical, and no shape changed. Never raises for a
    failed check; returns a :class:`graphprune.verify.Verification`."""
    from graphprune.runtime import seeded_inputs
    from graphprune.verify.onnx import compare_with_oracle

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


EDITS_KEY = "graphprune.weight_edits"  # model metadata: which initializers a value-only pass edited, as JSON


def record(model: onnx.ModelProto, edits: Mapping[str, WeightEdit], **info) -> None:
    """Note in ``model``'s metadata which initializers were edited (``graphprune verify`` reads it)."""
    entry = model.metadata_props.add()
    entry.key = EDITS_KEY
    entry.value = json.dumps({"weights": sorted(edits), "scaled": any(e.scale is not None for e in edits.values()),
                              **info})


def verify_stored(source, pruned: onnx.ModelProto, plan, *, rtol: float, atol: float, seed: int):
    """``graphprune verify`` for a model whose weights a value-only pass edited after (or instead of) channel
    removal: randomized PFP (factors in ``plan.meta["reweight"]``) or SiPP (weights named in its metadata).

    The channel stage is rebuilt from the stored plan and checked against the masked original. PFP's scaling is
    rebuilt from the stored factors and checked exactly. SiPP's masks are read off the pruned weights (zeros);
    for deterministic SiPP every other entry must equal the original, while for randomized / hybrid SiPP the
    scales are read off too, so only the rest of the model (other weights, graph, shapes) is checked there.
    """
    from graphprune.channels.analysis import analyse
    from graphprune.emit.onnx import emit
    from graphprune.pipeline.state import PruneState
    from graphprune.pipeline.stages import combine
    from graphprune.verify.onnx import verify

    results = []
    before = source.model
    if not plan.empty:
        before = emit(source.model, source.graph, plan)
        results.append(("", verify(source, before, plan, rtol=rtol, atol=atol, seed=seed)))
    props = {p.key: p.value for p in pruned.metadata_props}
    if plan.meta.get("reweight"):
        from graphprune.passes.reweight import Reweight

        state = PruneState(source=source, model=before, channels=analyse(source.graph), plan=plan)
        edits = Reweight()(state).weight_edits
        results.append(("Reweight", verify_edits(before, pruned, edits, source.input_shapes, interface=source.model,
                                                 rtol=rtol, atol=atol, seed=seed)))
    if EDITS_KEY in props:
        info = json.loads(props[EDITS_KEY])
        originals = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
        got = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
        edits = {}
        for name in info["weights"]:
            keep = got[name] != 0
            scale = None
            if info.get("scaled"):
                with np.errstate(divide="ignore", invalid="ignore"):
                    scale = np.where(keep, got[name] / originals[name], 1.0).astype(np.float32)
            edits[name] = WeightEdit(keep, scale)
        results.append(("SiPP", verify_edits(before, pruned, edits, source.input_shapes, interface=source.model,
                                              rtol=rtol, atol=atol, seed=seed)))
    return combine(source, results, pruned, seed)

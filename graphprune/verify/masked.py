"""The channel-removal oracle: the emitted model is right when it equals the masked original.

Pruning changes outputs by design, so "verified" means: the emitted model passes the full ONNX checker,
runs in onnxruntime, keeps the interface, and computes exactly what the original computes when every removed
unit is set to zero where it lives (every computed tensor of a pruned space is passed through
``Where(mask, t, 0)``, every weight is zeroed in its data). That checks every coupling, slice and shape fix independently of which scoring method
chose the channels. Drift against the unpruned original is measured, not asserted.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.channels.plan import Plan
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.frontends.onnx.proto import skeleton
from graphprune.gsgraph import export_like, reroute
from graphprune.io import Stripped, holds_data
from graphprune.runtime import seeded_inputs
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.result import Tolerance, Verification


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


def verify_masked(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan,
                  tolerance: Tolerance = Tolerance()) -> Verification:
    """``pruned`` against the masked original of ``source`` (the source itself for an empty plan). Never raises
    for a failed check (the caller decides), only reports it."""
    feeds = seeded_inputs(source.model, source.input_shapes, tolerance.seed)
    oracle = None if plan.empty else (lambda: masked_model(source.model, plan))
    return compare_with_oracle(source.model, pruned, oracle, feeds, label="masked_original",
                               what="pruned - masked original", rtol=tolerance.rtol, atol=tolerance.atol,
                               declared=source.declared)

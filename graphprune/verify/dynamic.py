"""Dynamic dimensions: the pruned model keeps the original's, once shown right at a second size.

Channel analysis needs static shapes, so graphprune pins every dynamic input dimension (``--input-shape``) and
folds the model's shape arithmetic with it; the pruned model is emitted from that static graph and verified at
the pinned size. When the original declares dynamic dimensions, :func:`restore` gives the pruned model the
original's input and output types back, but only after two comparisons at a second size (every dynamic
dimension changed) pass:

1. the folded original, relaxed the same way, equals the original as given: folding baked in no pinned size
   (``x.view(x.size(0), -1)`` folded to ``Reshape(x, [1, -1])`` would not);
2. the relaxed pruned model equals the relaxed masked original: the surgery baked in none either.

Where folding did bake a size in, the plan is emitted once more on the original folded *without* pinning (its
shape arithmetic on the dynamic dimensions stays in the graph), and that model is verified like the first one
at the analysed shapes; at the second size the unpinned fold must equal the original, and the model the masked
unpinned fold. Otherwise the pruned model keeps the static shapes it was verified at, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx

from graphprune.channels.plan import Plan
from graphprune.emit.onnx import emit
from graphprune.errors import GraphPruneError, VerificationError
from graphprune.frontends.onnx.control_flow import fold_model
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.frontends.onnx.proto import Signature, skeleton, with_input_shapes
from graphprune.io import Stripped
from graphprune.runtime import run, runnable, seeded_inputs, session
from graphprune.verify.masked import masked_model, verify_masked
from graphprune.verify.result import Tolerance, close


@dataclass(frozen=True, eq=False)
class Restored:
    """Whether the pruned model got the original's dynamic dimensions back, the line for the report, and the
    model to use instead of the pruned one (when it was emitted again from the unpinned fold)."""

    dynamic: bool
    note: str
    model: onnx.ModelProto | None = None


def dynamic_axes(source: LoadedModel) -> dict[str, tuple[int, ...]]:
    """Input → the axes the original declares dynamic (a name, or no size)."""
    out = {}
    for name, _, dims in (source.declared or {}).get("input", ()):
        axes = tuple(i for i, d in enumerate(dims or ()) if not (isinstance(d, int) and d > 0))
        if axes:
            out[name] = axes
    return out


def second_shapes(source: LoadedModel, axes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The analysed shapes with every dynamic dimension changed: 1 → 2, any other size n → n − 1 (smaller, so a
    sequence pinned at a model's longest still fits)."""
    out = {}
    for name, shape in source.input_shapes.items():
        dims = list(shape)
        for a in axes.get(name, ()):
            dims[a] = 2 if dims[a] == 1 else dims[a] - 1
        out[name] = tuple(dims)
    return out


def decisions(names: tuple[str, ...]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:3])
    return f"If {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def relaxed(model: onnx.ModelProto, declared: Signature) -> onnx.ModelProto:
    """``model`` (edited in place) with the declared input and output types and no intermediate shapes, which
    hold the pinned sizes; onnxruntime and the checker infer them again."""
    types = {name: (elem, dims) for kind in ("input", "output") for name, elem, dims in declared[kind]}
    for vi in (*model.graph.input, *model.graph.output):
        if vi.name in types:
            elem, dims = types[vi.name]
            vi.type.CopyFrom(onnx.helper.make_tensor_type_proto(elem, None if dims is None else list(dims)))
    del model.graph.value_info[:]
    return model


def restore(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan, *, rtol: float, atol: float,
            seed: int) -> Restored:
    """Give ``pruned`` (verified at the analysed shapes; edited in place when it passes) the original's
    dynamic dimensions, if the two comparisons of the module docstring pass at a second size."""
    axes = dynamic_axes(source)
    shapes = second_shapes(source, axes)
    where = ", ".join(f"{name}[{','.join(map(str, a))}]" for name, a in axes.items())
    static = f"the pruned model keeps the analysed input shapes {dict(source.input_shapes)}"
    feeds = seeded_inputs(source.model, shapes, seed)
    try:
        given = run(session(source.path if source.given is None else source.given, once=True), feeds)
    except VerificationError:
        return Restored(False, f"{static}: the original does not run at {shapes}, so its dynamic {where} could not be checked")
    folded = outputs(Stripped.over(relaxed(skeleton(source.model), source.declared), source.model), feeds)
    # an If decided at the analysed shapes may be decided otherwise at sizes the second one does not reach
    if folded is None or source.decided or not close(given, folded, rtol, atol)[0]:
        again = emitted_unpinned(source, pruned, plan, feeds, given, rtol=rtol, atol=atol, seed=seed)
        if again is not None:
            return Restored(True, f"dynamic {where} kept (folding at the analysed shapes fixed them, so the plan was "
                                  f"emitted on the model folded without pinning them); verified at "
                                  f"{dict(source.input_shapes)} and at {shapes}", again)
        if source.decided:
            return Restored(False, f"{static}: folding at those shapes decided {decisions(source.decided)} (their "
                                   f"branches were inlined), and emitting the plan on the model folded without "
                                   f"pinning its dynamic {where} did not verify")
        return Restored(False, f"{static}: folding the model's shape arithmetic at those shapes fixed its dynamic "
                               f"{where} (it no longer equals the original at {shapes}), and emitting the plan on "
                               f"the unpinned model did not verify")
    oracle = masked_model(source.model, plan)
    expected = outputs(Stripped(relaxed(oracle.model, source.declared), oracle.data), feeds)
    got = outputs(Stripped.over(relaxed(skeleton(pruned), source.declared), pruned), feeds)
    if expected is None or got is None or not close(expected, got, rtol, atol)[0]:
        return Restored(False, f"{static}: with its dynamic {where} relaxed it is not equal to the masked original at {shapes}")
    relaxed(pruned, source.declared)
    return Restored(True, f"dynamic {where} kept: verified at {dict(source.input_shapes)} and at {shapes}")


def emitted_unpinned(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan, feeds: Mapping[str, np.ndarray],
                     given: list[np.ndarray], *, rtol: float, atol: float, seed: int) -> onnx.ModelProto | None:
    """``plan`` emitted on the original folded with its dynamic dimensions left dynamic, with ``pruned``'s
    metadata; None unless it verifies at the analysed shapes, the unpinned fold equals the original on ``feeds``
    (``given``: the original's outputs), and the candidate equals the masked unpinned fold there."""
    try:
        unpinned = fold_model(with_input_shapes(source.original, {}, copy=source.given is not None))
        candidate = emit(unpinned, source.graph, plan)
    except (GraphPruneError, KeyError, AttributeError, TypeError, ValueError):  # a shape sub-graph the fixes cannot read
        return None
    del candidate.metadata_props[:]
    candidate.metadata_props.extend(pruned.metadata_props)
    if not verify_masked(source, candidate, plan, Tolerance(rtol, atol, seed)).ok:
        return None
    folded = outputs(Stripped.over(skeleton(unpinned), unpinned), feeds)
    if folded is None or not close(given, folded, rtol, atol)[0]:
        return None
    oracle = masked_model(unpinned, plan)
    expected, got = outputs(oracle, feeds), outputs(Stripped.over(skeleton(candidate), candidate), feeds)
    if expected is None or got is None or not close(expected, got, rtol, atol)[0]:
        return None
    return candidate


def outputs(model: Stripped, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """``model``'s outputs on ``feeds``, or None when onnxruntime cannot load or run it at their shapes."""
    try:
        with runnable(model) as m:
            return run(session(m, once=True), feeds)
    except VerificationError:
        return None

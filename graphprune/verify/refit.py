"""The oracle of layer-wise reconstruction: the pruned, refitted model equals the masked original in which exactly
the refitted initializers hold the refitted values.

Each named initializer of the output is put back into the original's shape at the kept positions of every axis
(the plan says which), the original values elsewhere; the masked original of that model
(:func:`graphprune.verify.masked.masked_model`) zeroes what was removed. So every *other* weight must still be the
sliced original, every refitted value must sit at the right channels, and the surgery must be right, for the
outputs to agree; the values themselves are whatever the fit chose (their quality is the drift, reported).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.errors import InternalError
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.runtime import seeded_inputs
from graphprune.verify.compare import compare_with_oracle
from graphprune.verify.masked import masked_model
from graphprune.verify.result import Tolerance, Verification


def placed(original: np.ndarray, pruned: np.ndarray, name: str, plan: Plan) -> np.ndarray:
    """``original`` with ``pruned`` written at the kept positions of each axis of initializer ``name``."""
    index = []
    for axis, size in enumerate(original.shape):
        kept = plan.kept(Space(name, axis))
        index.append(np.arange(size) if kept is None else np.asarray(kept))
    if tuple(len(i) for i in index) != pruned.shape:
        raise InternalError(f"refitted '{name}' has shape {pruned.shape}, the plan keeps "
                            f"{tuple(len(i) for i in index)} of {original.shape}")
    out = np.array(original, copy=True)
    out[np.ix_(*index)] = pruned
    return out


def refitted_original(original: onnx.ModelProto, pruned: onnx.ModelProto, names: Iterable[str],
                      plan: Plan) -> onnx.ModelProto:
    """A copy of ``original`` whose initializers ``names`` hold ``pruned``'s values, placed by :func:`placed`."""
    names = set(names)
    got = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name in names}
    missing = sorted(names - set(got))
    if missing:
        raise InternalError(f"refitted initializers {missing[:3]} are not in the pruned model")
    out = onnx.ModelProto()
    out.CopyFrom(original)
    for init in out.graph.initializer:
        if init.name in got:
            init.CopyFrom(numpy_helper.from_array(placed(numpy_helper.to_array(init), got[init.name], init.name, plan),
                                                  init.name))
    return out


def verify_refit(source: LoadedModel, pruned: onnx.ModelProto, plan: Plan, names: Iterable[str],
                 tolerance: Tolerance = Tolerance()) -> Verification:
    """``pruned`` against the masked original with the refitted initializers ``names`` in place. Never raises for
    a failed check."""
    names = tuple(names)
    feeds = seeded_inputs(source.model, source.input_shapes, tolerance.seed)
    oracle = lambda: masked_model(refitted_original(source.model, pruned, names, plan), plan)  # noqa: E731
    return compare_with_oracle(source.model, pruned, oracle, feeds, label="refitted_masked_original",
                               what=f"reconstructed - masked original with the {len(names)} refitted weights",
                               rtol=tolerance.rtol, atol=tolerance.atol, declared=source.declared)

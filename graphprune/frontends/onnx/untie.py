"""Split constants that an exporter merged because their values happen to be equal.

The dynamo exporter (and onnx's own optimisers) store identical initializers once: every all-zero bias of a
BERT's MLPs, every all-ones LayerNorm scale of a freshly initialised model. Read as it is, such a tensor is a
weight tie: its channel axis couples every layer that reads it, and unrelated layers can only be pruned together
(a dynamo BERT export pruned 1 group instead of 8). A tensor whose elements are all equal carries no tie a rule
could need (any copy of it is the same tensor), so each further use gets its own copy before analysis. A
non-uniform shared tensor is kept shared: that is a real tie (tied embeddings, a shared head), and the rules
prune it as one.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

MIN_ELEMENTS = 2  # a scalar is broadcast, never pruned along an axis: sharing it couples nothing


def uniform(tensor: onnx.TensorProto) -> bool:
    """Whether every element of ``tensor`` is the same value (data held in the proto, not external)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or int(np.prod(tensor.dims)) < MIN_ELEMENTS:
        return False
    values = numpy_helper.to_array(tensor)
    return bool(np.all(values == values.flat[0]))


def split_uniform_shared(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``model`` (edited in place) with every further top-level use of a shared uniform initializer reading its
    own copy (``NAME::use2`` …), and the names so split."""
    graph = model.graph
    by_name = {t.name: t for t in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input if name in by_name)
    outputs = {o.name for o in graph.output}
    split = tuple(name for name, n in uses.items() if n > 1 and name not in outputs and uniform(by_name[name]))
    if not split:
        return model, ()
    seen: Counter = Counter()
    taken = {t.name for t in graph.initializer} | {o for node in graph.node for o in node.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in split:
                continue
            seen[name] += 1
            if seen[name] == 1:
                continue
            copy = fresh(f"{name}::use{seen[name]}", taken)
            tensor = onnx.TensorProto()
            tensor.CopyFrom(by_name[name])
            tensor.name = copy
            graph.initializer.append(tensor)
            node.input[i] = copy
    return model, split


def fresh(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with a suffix, not yet in ``taken`` (which it joins)."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}.{k}"
    taken.add(candidate)
    return candidate

"""Weights stored in a narrower type than they are computed in stay stored that way.

A model may keep its weights as int8 / uint8 / float16 / bfloat16 initializers behind a ``Cast`` to float32 (or
as int8 behind a ``DequantizeLinear``, which graphsurgeon never folds). Folding such a ``Cast`` would turn each
weight into a float32 initializer: the pruned file, with half the parameters, came out larger than the original.
So folding skips them (:func:`keeps_storage`, graphsurgeon's ``should_exclude_node``); the narrow initializer is
then the parameter the channel rules see through the ``Cast`` (element-wise), and the emitter slices it in place.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

NARROW_MIN_ELEMENTS = 16  # smaller constants (scalars, a few scales) fold as before: their size does not matter


def keeps_storage(node: gs.Node) -> bool:
    """Whether folding must leave ``node`` alone: a ``Cast`` that widens a constant of at least
    :data:`NARROW_MIN_ELEMENTS` elements to a float type (graphsurgeon asks only about nodes it could fold)."""
    if node.op != "Cast" or not node.inputs or not node.outputs:
        return False
    source = node.inputs[0]
    src, dst = np_dtype(source.dtype), np_dtype(node.attrs.get("to"))
    if src is None or dst is None or source.shape is None or not all(isinstance(d, int) for d in source.shape):
        return False
    return is_floating(dst) and dst.itemsize > src.itemsize and int(np.prod(source.shape)) >= NARROW_MIN_ELEMENTS


def np_dtype(dtype) -> np.dtype | None:
    """A numpy dtype from graphsurgeon's (numpy, or an ONNX enum for types numpy lacks) or a ``Cast``'s ``to``."""
    if dtype is None:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)) if isinstance(dtype, int) else np.dtype(dtype)
    except Exception:  # a type neither numpy nor ml_dtypes knows: leave the node to graphsurgeon
        return None


def is_floating(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating)

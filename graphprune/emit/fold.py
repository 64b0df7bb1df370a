"""Folding surgery on ONNX: inference BatchNormalization into the Conv before it, no-op nodes dropped.

* **BN into Conv**: ``y = γ·(conv(x, W) + b − μ)/√(σ²+ε) + β`` is ``conv(x, W·s) + (b − μ)·s + β`` with
  ``s = γ/√(σ²+ε)``, when the Conv's output is read by that BatchNormalization only and is not a graph output,
  and every weight and BN vector is a constant. New initializers are attached (shared ones are never edited).
* **No-ops**: ``Identity`` and inference ``Dropout`` (no mask output read) are bypassed; where the no-op's
  output is a graph output the node is kept, so the interface keeps its names.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.gsgraph import export_like


def constant(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def fold_batchnorms(g: gs.Graph) -> int:
    outputs = {t.name for t in g.outputs}
    n = 0
    for bn in [node for node in g.nodes if node.op == "BatchNormalization"]:
        if int(bn.attrs.get("training_mode", 0)) or len([o for o in bn.outputs if o.name]) != 1:
            continue
        x = bn.inputs[0]
        if len(x.inputs) != 1 or x.inputs[0].op != "Conv" or x.name in outputs or len(x.outputs) != 1:
            continue
        conv = x.inputs[0]
        vals = [constant(t) for t in bn.inputs[1:5]]
        w = constant(conv.inputs[1])
        b = constant(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2].name else None
        if w is None or any(v is None for v in vals) or (len(conv.inputs) > 2 and conv.inputs[2].name and b is None):
            continue
        gamma, beta, mean, var = (v.astype(np.float64) for v in vals)
        s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        w_new = (w.astype(np.float64) * s.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype)
        b_old = np.zeros_like(s) if b is None else b.astype(np.float64)
        b_new = ((b_old - mean) * s + beta).astype(w.dtype)
        conv.inputs[1] = gs.Constant(f"{conv.name}::folded_w", np.ascontiguousarray(w_new))
        bias = gs.Constant(f"{conv.name}::folded_b", b_new)
        if len(conv.inputs) > 2:
            conv.inputs[2] = bias
        else:
            conv.inputs.append(bias)
        y = bn.outputs[0]
        bn.outputs.clear()
        conv.outputs[0] = y
        n += 1
    return n


def drop_noops(g: gs.Graph) -> int:
    outputs = {t.name for t in g.outputs}
    n = 0
    for node in [node for node in g.nodes if node.op in ("Identity", "Dropout")]:
        if node.op == "Dropout":
            extra = [o for o in node.outputs[1:] if o.name and o.outputs]
            if extra or int(node.attrs.get("training_mode", 0)) or (len(node.inputs) > 2 and node.inputs[2].name):
                continue
        x, y = node.inputs[0], node.outputs[0]
        if y.name in outputs:
            continue
        for consumer in list(y.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is y:
                    consumer.inputs[i] = x
        node.outputs.clear()
        node.inputs.clear()  # so that x's consumers are only the real ones (a BatchNorm behind it may fold)
        n += 1
    return n


def fold_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of ``model`` with BatchNorms folded into Convs and no-ops removed, and what was done."""
    g = gs.import_onnx(model)
    noops = drop_noops(g)  # first: a BatchNorm behind a Dropout then reads its Conv directly
    stats = {"batchnorms_folded": fold_batchnorms(g), "noops_removed": noops}
    g.cleanup().toposort()
    out = export_like(g, model)
    out.metadata_props.extend(model.metadata_props)
    return out, stats

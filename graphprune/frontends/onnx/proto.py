"""ONNX proto helpers every layer uses: a model's interface, its weight-free skeleton, shape inference."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from graphprune.errors import ModelLoadError
from graphprune.io import DATA_FIELDS, copy_fields
from graphprune.runtime import RUNTIME_ONNX_DOMAIN_OPS


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


Signature = Mapping[str, tuple[tuple[str, int, tuple], ...]]  # "input" / "output" → (name, element type, dims)


def signature(model: onnx.ModelProto) -> Signature:
    """A model's interface: its real inputs and its outputs, with element types and declared dims (a dynamic
    dim as its name, or None; no shape at all as None)."""
    def sig(vis):
        return tuple((v.name, v.type.tensor_type.elem_type,
                      declared_shape(v) if v.type.tensor_type.HasField("shape") else None) for v in vis)

    return {"input": sig(graph_inputs(model)), "output": sig(model.graph.output)}


def declared_shape(vi: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    dims = vi.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)


def with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], *,
                      copy: bool = True) -> onnx.ModelProto:
    """``model`` with static input shapes and stale intermediate shapes dropped (they may hold dynamic dims): a
    copy, or with ``copy=False`` ``model`` itself, edited."""
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    else:
        out = model
    for vi in out.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, s in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = s
    for vi in out.graph.output:  # recomputed from the static inputs; the rank stays (see unknown_dims)
        unknown_dims(vi)
    del out.graph.value_info[:]
    return out


def unknown_dims(vi: onnx.ValueInfoProto) -> None:
    """Forget ``vi``'s dims but keep its rank: shape inference fills them in, and where it cannot (after an op it
    does not know, such as com.microsoft's ``DynamicQuantizeLSTM``) the output still has a shape, which the checker
    requires of a graph output. A declared rank is right: the input passed strict shape inference with it."""
    if not vi.type.tensor_type.HasField("shape"):
        return
    for d in vi.type.tensor_type.shape.dim:
        d.Clear()


SKELETON_MIN_ELEMENTS = 4096


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers keep their type and dims but not their data.

    Shape inference reads data only from small constants (shapes, axes); dropping the weights saves
    serialising the whole model for it, which dominated load time on ResNet-50-sized graphs. The copy is built
    field by field, so the weights are never copied, not even for a moment."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip=("graph",))
    copy_fields(model.graph, out.graph, skip=("initializer",))
    for init in model.graph.initializer:
        light = out.graph.initializer.add()
        if int(np.prod(init.dims, dtype=np.int64)) >= SKELETON_MIN_ELEMENTS:
            copy_fields(init, light, skip=DATA_FIELDS)
        else:
            light.CopyFrom(init)
    return out


def inferred_shapes(model: onnx.ModelProto, *, strict: bool = False) -> onnx.ModelProto:
    """``model`` (edited in place and returned) with value infos and output shapes from shape inference."""
    weights = {i.name for i in model.graph.initializer if int(np.prod(i.dims, dtype=np.int64)) >= SKELETON_MIN_ELEMENTS}
    light = skeleton(model) if weights else copied(model)
    declared = undeclared_outputs(light)
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=strict, data_prop=True)
    for _ in range(MAX_RECURRENT_ROUNDS):  # one round per quantized LSTM whose input shape the last one revealed
        extra = quantized_lstm_shapes(light, inferred)
        if not extra:
            break
        light.graph.value_info.extend(extra)
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=strict, data_prop=True)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    model.graph.value_info.extend(contrib_shapes(light, inferred))
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    for vi in model.graph.output:
        if not vi.type.tensor_type.HasField("shape") and declared.get(vi.name) is not None:
            vi.type.tensor_type.shape.CopyFrom(declared[vi.name])
    return model


MAX_RECURRENT_ROUNDS = 8


def quantized_lstm_shapes(light: onnx.ModelProto, inferred: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The output shapes of com.microsoft ``DynamicQuantizeLSTM`` nodes (``quantize_dynamic`` of an LSTM) whose
    input shape is known and outputs are not: ONNX has no schema for it and onnxruntime's symbolic inference gives
    up on it, so every tensor after it had no shape, its shape arithmetic did not fold, and all of it froze (the
    hidden units and the classifier behind ddddocr's int8 recogniser: 12M of its 13.5M params). They are an
    LSTM's: Y ``(T, directions, B, H)``, Y_h and Y_c ``(directions, B, H)``."""
    known = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
             if vi.type.tensor_type.HasField("shape")}
    out = []
    for node in light.graph.node:
        if node.op_type != "DynamicQuantizeLSTM" or node.domain != "com.microsoft" or node.input[0] not in known:
            continue
        x = known[node.input[0]].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in x.shape.dim]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if len(dims) != 3 or None in dims[:2] or "hidden_size" not in attrs:
            continue
        t, b, h = dims[0], dims[1], int(attrs["hidden_size"])
        directions = 2 if attrs.get("direction", b"forward") == b"bidirectional" else 1
        for name, shape in zip(node.output, ([t, directions, b, h], [directions, b, h], [directions, b, h])):
            if name and name not in known:
                out.append(onnx.helper.make_tensor_value_info(name, x.elem_type, shape))
    return out


def copied(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def undeclared_outputs(light: onnx.ModelProto) -> dict[str, onnx.TensorShapeProto | None]:
    """Drop the graph outputs' declared shapes from ``light`` (edited in place) and return them.

    A declared output shape is the exporter's claim, not a fact of the graph: ddddocr's recogniser declares its
    output ``[1, seqlen]`` while its last Reshape makes it rank 3 (onnxruntime runs it; ONNX's inference cannot
    see the rank while the shape is computed, so the file passes strict inference). Once folding makes that shape
    a constant, the claim contradicts the op, and strict inference of the folded or pruned model failed (exit 4).
    The ops decide; the declaration is put back only where inference finds no shape (after an op it does not
    know, e.g. com.microsoft's ``DynamicQuantizeLSTM``): the checker requires a graph output to have one."""
    declared: dict[str, onnx.TensorShapeProto | None] = {}
    for vi in light.graph.output:
        if not vi.type.HasField("tensor_type"):
            continue
        tensor = vi.type.tensor_type
        if tensor.HasField("shape"):
            declared[vi.name] = onnx.TensorShapeProto()
            declared[vi.name].CopyFrom(tensor.shape)
        else:
            declared[vi.name] = None
        tensor.ClearField("shape")
    return declared


def contrib_shapes(light: onnx.ModelProto, inferred: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Shapes ONNX's inference leaves unknown after an op of another domain (com.microsoft's
    SkipLayerNormalization, FusedMatMul … in onnxruntime-optimised models, and its ONNX-domain ones such as
    SimplifiedLayerNormalization: ONNX has no schema for them, so every
    tensor downstream lost its shape and froze), from onnxruntime's symbolic shape inference, which knows its
    contrib ops. Only fully static shapes are taken; anything it cannot do leaves the tensors as they were."""
    if all(n.domain in ("", "ai.onnx") and n.op_type not in RUNTIME_ONNX_DOMAIN_OPS for n in light.graph.node):
        return []
    known = {vi.name for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
             if vi.type.tensor_type.HasField("shape")}
    known |= {i.name for i in light.graph.initializer}
    missing = {o for n in light.graph.node for o in n.output if o and o not in known}
    if not missing:
        return []
    symbolic = symbolic_shapes(light)
    if symbolic is None:
        return []
    found = []
    for vi in symbolic.graph.value_info:
        dims = vi.type.tensor_type.shape.dim if vi.type.tensor_type.HasField("shape") else None
        if vi.name in missing and dims is not None and all(d.HasField("dim_value") for d in dims):
            found.append(vi)
    return found


def symbolic_shapes(light: onnx.ModelProto) -> onnx.ModelProto | None:
    """onnxruntime's symbolic shape inference of ``light``, complete or not; None when it cannot run.

    Its ``infer_shapes`` entry point, on an incomplete inference, writes a debug copy of the model
    (``sym_shape_infer_temp.onnx`` and a data file per tensor) into the current folder and raises: a prune run left
    files in the user's folder. The same steps are taken here, keeping what it inferred and writing nothing."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inference = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess rank, verbose
        inference._preprocess(light)
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception:  # its own gaps (an op it does not know either), or another onnxruntime's internals
        return None


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return inferred_shapes(model)
    except Exception as exc:
        raise ModelLoadError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from exc

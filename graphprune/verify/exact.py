"""Integer linear ops written out exactly, for comparing a pruned model with its oracle.

onnxruntime's CPU kernels for MatMulInteger and QLinearConv multiply uint8 activations by int8 weights in pairs
that saturate at int16 on x86 CPUs without VNNI (255 · −128 · 2 does not fit): the result depends on which input
channels sit side by side, so a right pruned model and its masked original (whose removed channels are still
there, as zeros) differed by whole quantization steps. Both are compared with these ops written out as float
MatMul / Conv of ``(a − a_zp)`` and ``(b − b_zp)``: integer-valued, so every partial sum is exact (below 2^24) in
any order, and requantized by ``QuantizeLinear`` (:func:`exact_integer_linear`). The model itself is still
checked and run as it is (:func:`graphprune.verify.compare.compare_with_oracle`).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from graphprune.channels.quantized import INTEGER_LINEAR, input_name
from graphprune.io import Stripped, copy_fields

REWRITTEN = ("MatMulInteger", "QLinearConv", "QLinearMatMul")  # ConvInteger's kernel is exact (tested)


def exact_integer_linear(model: onnx.ModelProto | Stripped) -> onnx.ModelProto | Stripped:
    """``model`` with every MatMulInteger / QLinearConv / QLinearMatMul written out exactly; ``model`` itself when
    it has none (the common case: no copy). A :class:`Stripped` oracle keeps its data source."""
    proto = model.model if isinstance(model, Stripped) else model
    if not any(n.op_type in REWRITTEN and n.domain in ("", "ai.onnx") for n in proto.graph.node):
        return model
    ranks = known_ranks(proto)
    out = onnx.ModelProto()
    copy_fields(proto, out, skip=("graph",))
    copy_fields(proto.graph, out.graph, skip=("node",))
    for i, node in enumerate(proto.graph.node):
        written = written_out(node, f"{node.name or node.op_type}::exact{i}", ranks)
        out.graph.node.extend(written if written is not None else [node])
    return Stripped(out, model.data) if isinstance(model, Stripped) else out


def known_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Ranks of the tensors whose shape the model records (initializers, inputs, value infos)."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    return ranks


def written_out(node: onnx.NodeProto, tag: str, ranks: dict[str, int]) -> list[onnx.NodeProto] | None:
    """The nodes computing ``node`` exactly, or None to keep it (not rewritten, or a rank this cannot place)."""
    if node.op_type not in REWRITTEN or node.domain not in ("", "ai.onnx"):
        return None
    q, ins = INTEGER_LINEAR[node.op_type], list(node.input)
    rank = ranks.get(ins[q.b])
    if rank is None or rank < 2:
        return None
    nodes: list[onnx.NodeProto] = []
    counter = iter(range(1000))

    def op(kind: str, *inputs: str, **attrs) -> str:
        name = f"{tag}/{kind.lower()}{next(counter)}"
        nodes.append(helper.make_node(kind, list(inputs), [name], name=name, **attrs))
        return name

    def const(values: list[int]) -> str:
        name = f"{tag}/shape{next(counter)}"
        nodes.append(helper.make_node("Constant", [], [name], name=name,
                                      value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)))
        return name

    def centred(x: str, zp: str | None, shape: list[int] | None) -> str:
        """``float(x) − float(zp)``, the zero point reshaped to ``shape`` (per channel / row) when given."""
        xf = op("Cast", x, to=TensorProto.FLOAT)
        if zp is None:
            return xf
        zf = op("Cast", zp, to=TensorProto.FLOAT)
        return op("Sub", xf, op("Reshape", zf, const(shape)) if shape else zf)

    conv = q.kind == "Conv"
    a_shape = None if conv else [-1, 1]  # A's zero point per row: (M, 1) against (…, M, K)
    b_shape = [-1] + [1] * (rank - 1) if conv else None  # W's per output channel; B's per column broadcasts as is
    a = centred(ins[q.a], input_name(ins, q.a_zp), a_shape)
    b = centred(ins[q.b], input_name(ins, q.b_zp), b_shape)
    attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute} if conv else {}
    acc = op("Conv", a, b, **attrs) if conv else op("MatMul", a, b)
    if node.op_type == "MatMulInteger":
        nodes.append(helper.make_node("Cast", [acc], list(node.output), name=f"{tag}/out", to=TensorProto.INT32))
        return nodes
    per_channel = [1, -1] + [1] * (rank - 2) if conv else None  # output channels: Y[1] of a conv, Y[-1] of B
    bias = input_name(ins, q.bias)
    if bias:
        acc = op("Add", acc, op("Reshape", op("Cast", bias, to=TensorProto.FLOAT), const(per_channel)))
    scale = op("Mul", op("Reshape", ins[q.a_scale], const([-1, 1])) if not conv else ins[q.a_scale],
               op("Reshape", ins[q.b_scale], const(per_channel)) if conv else ins[q.b_scale])
    real = op("Mul", acc, scale)
    y_scale, y_zp = ins[6], input_name(ins, 7)
    nodes.append(helper.make_node("QuantizeLinear", [real, y_scale] + ([y_zp] if y_zp else []), list(node.output),
                                  name=f"{tag}/out"))
    return nodes

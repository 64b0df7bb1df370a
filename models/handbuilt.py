"""Hand-built ONNX graphs (``onnx.helper`` + numpy only, no torch).

Why they exist: exporters normalize graphs (fold BatchNorm into Conv, turn
weights into initializers, name things their own way). These graphs pin
down patterns a pruner must handle in ONNX produced by other tools:

* ``concat_skip``: Conv -> BatchNormalization -> Relu -> Conv, concatenated
  with the *first* conv's output (which therefore has two consumers), then
  Conv -> GlobalAveragePool -> Flatten -> Gemm.
* ``split_unequal``: Split into unequal channel parts (12 -> 4 + 8, sizes as
  an input tensor, opset 13+), a Conv on each, an Add of one part with a
  Slice of the other, and a Concat back.
* ``constant_weights_depthwise``: a Conv whose weight comes from a
  ``Constant`` node instead of an initializer, then a depthwise Conv
  (``group == channels``).
* ``matmul_mlp``: MatMul/Add/Relu/MatMul MLP on a (1, 4, 16) input with a
  residual Add of the input (weights as initializers).

Every model has opset 17, IR version 8, static shapes, one float input
"input" and one output "output", and seeded numpy weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class _Graph:
    """Tiny builder: collects nodes and initializers, draws seeded weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def rand(self, name: str, *shape: int, scale: float = 0.2) -> str:
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str] | str,
             name: str, **attrs: object) -> str:
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, group: int = 1) -> str:
        w = self.rand(f"{name}.weight", cout, cin // group, k, k)
        b = self.rand(f"{name}.bias", cout, scale=0.05)
        pad = k // 2
        return self.node("Conv", [x, w, b], f"{name}_out", name, kernel_shape=[k, k],
                         pads=[pad] * 4, group=group)

    def head(self, x: str, channels: int, classes: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm producing "output"."""
        g = self.node("GlobalAveragePool", [x], "gap_out", "gap")
        f = self.node("Flatten", [g], "flatten_out", "flatten", axis=1)
        w = self.rand("fc.weight", classes, channels)
        b = self.rand("fc.bias", classes, scale=0.05)
        return self.node("Gemm", [f, w, b], "output", "fc", transB=1)

    def model(self, name: str, input_shape: Sequence[int],
              output_shape: Sequence[int]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape))],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="graphprune.models.handbuilt")
        m.ir_version = IR_VERSION
        return m


def concat_skip() -> onnx.ModelProto:
    """(a) conv -> bn -> relu -> conv, concat with conv1's output, conv, GAP, flatten, gemm."""
    g = _Graph(seed=1)
    c1 = g.conv("input", "conv1", 3, 8, 3)
    bn = g.node("BatchNormalization",
                [c1, g.init("bn1.scale", g.rng.uniform(0.5, 1.5, 8).astype(np.float32)),
                 g.rand("bn1.bias", 8, scale=0.1), g.rand("bn1.mean", 8, scale=0.1),
                 g.init("bn1.var", g.rng.uniform(0.5, 1.5, 8).astype(np.float32))],
                "bn1_out", "bn1", epsilon=1e-5)
    r = g.node("Relu", [bn], "relu1_out", "relu1")
    c2 = g.conv(r, "conv2", 8, 8, 3)
    cat = g.node("Concat", [c2, c1], "concat_out", "concat", axis=1)  # 16 channels
    c3 = g.conv(cat, "conv3", 16, 12, 1)
    g.head(c3, 12, 10)
    return g.model("concat_skip", (1, 3, 16, 16), (1, 10))


def split_unequal() -> onnx.ModelProto:
    """(b) conv -> Split [4, 8] -> conv each -> Add(a, Slice(b)[:4]) and Concat back."""
    g = _Graph(seed=2)
    c0 = g.conv("input", "conv0", 3, 12, 3)
    sizes = g.init("split_sizes", np.array([4, 8], dtype=np.int64))
    a, b = "split_a", "split_b"
    g.node("Split", [c0, sizes], [a, b], "split", axis=1)
    ca = g.conv(a, "conv_a", 4, 4, 3)
    cb = g.conv(b, "conv_b", 8, 8, 1)
    sl = g.node("Slice", [cb, g.init("slice.starts", np.array([0], dtype=np.int64)),
                          g.init("slice.ends", np.array([4], dtype=np.int64)),
                          g.init("slice.axes", np.array([1], dtype=np.int64))],
                "slice_out", "slice")
    add = g.node("Add", [ca, sl], "add_out", "add")
    cat = g.node("Concat", [add, cb], "concat_out", "concat", axis=1)  # 4 + 8 = 12
    r = g.node("Relu", [cat], "relu_out", "relu")
    g.head(r, 12, 10)
    return g.model("split_unequal", (1, 3, 16, 16), (1, 10))


def constant_weights_depthwise() -> onnx.ModelProto:
    """(c) Conv with weights from a Constant node, Relu, depthwise Conv, Relu, head."""
    g = _Graph(seed=3)
    w = (g.rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    g.node("Constant", [], "conv1_w", "conv1_weight_const",
           value=numpy_helper.from_array(w, "conv1_w_value"))
    c1 = g.node("Conv", ["input", "conv1_w"], "conv1_out", "conv1", kernel_shape=[3, 3],
                pads=[1, 1, 1, 1])
    r1 = g.node("Relu", [c1], "relu1_out", "relu1")
    dw = g.conv(r1, "dwconv", 8, 8, 3, group=8)
    r2 = g.node("Relu", [dw], "relu2_out", "relu2")
    g.head(r2, 8, 10)
    return g.model("constant_weights_depthwise", (1, 3, 16, 16), (1, 10))


def matmul_mlp() -> onnx.ModelProto:
    """(d) input (1, 4, 16): MatMul(16x64) + b -> Relu -> MatMul(64x16) -> + input."""
    g = _Graph(seed=4)
    h = g.node("MatMul", ["input", g.rand("fc1.weight", 16, 64)], "fc1_mm", "fc1_matmul")
    h = g.node("Add", [h, g.rand("fc1.bias", 64, scale=0.05)], "fc1_out", "fc1_add")
    h = g.node("Relu", [h], "relu_out", "relu")
    h = g.node("MatMul", [h, g.rand("fc2.weight", 64, 16)], "fc2_out", "fc2_matmul")
    g.node("Add", [h, "input"], "output", "residual_add")
    return g.model("matmul_mlp", (1, 4, 16), (1, 4, 16))


HANDBUILT_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "concat_skip": concat_skip,
    "split_unequal": split_unequal,
    "constant_weights_depthwise": constant_weights_depthwise,
    "matmul_mlp": matmul_mlp,
}


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """Static shape of the model's "input" (handy for feeding random data)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims)

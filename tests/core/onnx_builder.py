"""A tiny onnx.helper builder for rule tests: seeded weights, static shapes, one input, one output."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class G:
    def __init__(self, opset: int = 17, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, values, dtype=np.float32, name: str | None = None) -> str:
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def rand(self, *shape: int, scale: float = 0.3) -> str:
        return self.const(self.rng.standard_normal(shape) * scale)

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs) -> str | list[str]:
        name = self.fresh(op.lower())
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True, **attrs) -> str:
        inputs = [x, self.rand(cout, cin // group, k, k)] + ([self.rand(cout, scale=0.1)] if bias else [])
        attrs.setdefault("pads", [k // 2] * 4)
        return self.op("Conv", inputs, kernel_shape=[k, k], group=group, **attrs)

    def head(self, x: str, channels: int, classes: int = 5) -> str:
        g = self.op("GlobalAveragePool", [x])
        f = self.op("Flatten", [g], axis=1)
        self.nodes.append(helper.make_node("Gemm", [f, self.rand(classes, channels), self.rand(classes)], ["output"],
                                           name="fc", transB=1))
        return "output"

    def model(self, input_shape: Sequence[int], output_shape: Sequence[int], *, input_dtype=TensorProto.FLOAT,
              extra_opsets: Sequence[tuple[str, int]] = ()) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("input", input_dtype, list(input_shape))],
                                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape))],
                                  initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
        m = helper.make_model(graph, opset_imports=opsets)
        m.ir_version = 8
        return m

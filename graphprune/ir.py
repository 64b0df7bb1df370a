"""The small graph IR both frontends lower into.

It is deliberately tiny and immutable: tensors with static shapes and (for constants) values, nodes with
ONNX op names and attributes, and the graph's interface. Channel rules read it; they never edit it.
Emitters work on the source representation (ONNX proto or torch module) and use the IR only for lookups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np


def is_float(dtype) -> bool:
    """Floating point, bfloat16 included (ml_dtypes' bfloat16 has numpy kind 'V', not 'f')."""
    return dtype is not None and (np.issubdtype(dtype, np.floating) or np.dtype(dtype).name == "bfloat16")


QUANTIZED_WEIGHT_TYPES = ("int8", "uint8", "int4", "uint4")


def is_weight_type(dtype) -> bool:
    """A type weights are stored in: floating point, or the integer types of quantized weights (a ConvInteger's
    int8 filters, a DequantizeLinear's uint8 input). Shapes, axes and indices (int32 / int64) are not weights."""
    return is_float(dtype) or (dtype is not None and np.dtype(dtype).name in QUANTIZED_WEIGHT_TYPES)


ArraySource = np.ndarray | Callable[[], np.ndarray]


@dataclass(frozen=True)
class Tensor:
    """A value in the graph. ``shape`` is None when unknown; constants have a ``source``: their array, or a
    function that reads it (a large ONNX initializer is decoded from its proto on each access and not kept, so
    the IR never holds a second copy of the weights; see :func:`graphprune.frontends.onnx.to_ir`)."""

    name: str
    shape: tuple[int, ...] | None
    dtype: np.dtype | None
    source: ArraySource | None = field(default=None, repr=False)

    @property
    def value(self) -> np.ndarray | None:
        """The constant's values (None for a computed tensor). Reading a large initializer costs a decode: read
        it once per use, and ask :attr:`is_const`, :attr:`shape` or :attr:`dtype` when that is all you need."""
        return self.source() if callable(self.source) else self.source

    @property
    def is_const(self) -> bool:
        return self.source is not None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


@dataclass(frozen=True)
class Node:
    """One operation. ``inputs`` uses "" for an omitted optional input, as ONNX does.

    ``captures`` lists outer-scope tensors read by subgraphs (If / Loop / Scan bodies), so that rules can
    freeze them: a subgraph is a consumer the rule table cannot see into. ``bodies`` are those subgraphs lowered
    (in attribute order; an If's then, else), read only to count what a run costs inside them.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    domain: str = ""
    captures: tuple[str, ...] = ()
    bodies: tuple["Graph", ...] = ()
    source: str = ""  # where the node came from in the source model (module path, ONNX node name)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> str | None:
        """Name of input ``i``, or None when it is absent or omitted."""
        return self.inputs[i] if i < len(self.inputs) and self.inputs[i] else None

    @property
    def touched(self) -> tuple[str, ...]:
        """Every tensor name the node reads or writes, captures included."""
        return tuple(t for t in (*self.inputs, *self.outputs, *self.captures) if t)


@dataclass(frozen=True, eq=False)
class Graph:
    """A topologically ordered graph with its interface and opset."""

    nodes: tuple[Node, ...]
    tensors: Mapping[str, Tensor]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def memo(self, key: str, build: Callable[["Graph"], Any]) -> Any:
        """``build(self)``, computed once per graph (the graph never changes): derived views such as
        :func:`graphprune.channels.layers.weighted_layers`."""
        if key not in self._memo:
            self._memo[key] = build(self)
        return self._memo[key]

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self.tensors.get(name)
        return None if t is None else t.shape

    def value(self, name: str | None) -> np.ndarray | None:
        t = self.tensors.get(name) if name else None
        return None if t is None else t.value

    def is_const(self, name: str | None) -> bool:
        """Whether ``name`` is a constant, without reading its values."""
        t = self.tensors.get(name) if name else None
        return t is not None and t.is_const

    @cached_property
    def producers(self) -> Mapping[str, Node]:
        return MappingProxyType({o: n for n in self.nodes for o in n.outputs if o})

    @cached_property
    def consumers(self) -> Mapping[str, tuple[Node, ...]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in dict.fromkeys(n.inputs + n.captures):
                if t:
                    out.setdefault(t, []).append(n)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    @cached_property
    def node_by_name(self) -> Mapping[str, Node]:
        return MappingProxyType({n.name: n for n in self.nodes})

    @property
    def params(self) -> dict[str, Tensor]:
        """Constant tensors of a weight type (float, or quantized int8 / uint8): the weights pruning can shrink."""
        return {k: t for k, t in self.tensors.items() if t.is_const and is_weight_type(t.dtype)}

"""Normalisations written out of smaller ops, recognised as units, so a mean over channels is known to be a
statistic of a normalisation (and may run over fewer channels, see :class:`graphprune.channels.rules.Renormalised`)
rather than guessed. The three forms exporters write, each a ``ReduceMean`` over one axis, kept dims:

* **scale statistic** (RMSNorm; LayerNorm's variance): ``s = ReduceMean(b²)`` (``Pow(b, 2)`` or ``Mul(b, b)``),
  and ``b`` divided by a function of ``s`` (``b / Sqrt(s + ε)``, ``b · Reciprocal(Sqrt(s + ε))``,
  ``b · (1 / Sqrt(s + ε))``, ``b · Pow(s + ε, -½)``);
* **centering mean** (LayerNorm's mean): ``m = ReduceMean(x)``, ``d = x − m``, and ``d`` normalised by a scale
  statistic over the same axis;
* **mean normaliser** (ConvNeXt-V2's global response normalisation): ``g / (ReduceMean(g) + ε)``.

Anything else reduced over channels stays frozen by the reduction rule.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from graphprune.ir import Graph, Node

# ops a statistic may go through on its way to the division (all act on it element by element, with constants)
SCALAR_CHAIN = {"Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Pow", "Cast", "Identity"}


def reduced_axis(graph: Graph, node: Node) -> int | None:
    """The one axis ``node`` (a ReduceMean keeping dims) reduces, or None."""
    if node.op != "ReduceMean" or not int(node.attr("keepdims", 1)):
        return None
    shape = graph.shape(node.inputs[0])
    if shape is None:
        return None
    axes = node.attr("axes") if graph.opset < 18 else graph.value(node.input(1)) if node.input(1) else None
    if axes is None or len(np.atleast_1d(axes)) != 1:
        return None
    return int(np.atleast_1d(axes)[0]) % len(shape)


def is_scalar_const(graph: Graph, name: str) -> bool:
    """A constant of at most one element (ε, an exponent, a factor)."""
    t = graph.tensors.get(name)
    return t is not None and t.is_const and t.shape is not None and int(np.prod(t.shape, dtype=np.int64)) <= 1


def squared(graph: Graph, name: str) -> str | None:
    """``b`` when ``name`` is ``Pow(b, 2)`` or ``Mul(b, b)``."""
    p = graph.producers.get(name)
    if p is None:
        return None
    if p.op == "Mul" and len(p.inputs) == 2 and p.inputs[0] == p.inputs[1]:
        return p.inputs[0]
    if p.op == "Pow" and is_scalar_const(graph, p.inputs[1]) and float(np.ravel(graph.value(p.inputs[1]))[0]) == 2.0:
        return p.inputs[0]
    return None


def normalised(graph: Graph, stat: str, depth: int = 6) -> set[str]:
    """The tensors divided by a function of ``stat`` (through :data:`SCALAR_CHAIN` ops with scalar constants):
    ``num / f(stat)``, or ``num · f(stat)`` where ``f`` inverts it (``Reciprocal``, a negative ``Pow``)."""
    out: set[str] = set()
    frontier, seen = [(stat, False)], {stat}
    for _ in range(depth):
        nxt = []
        for t, inverted in frontier:
            for c in graph.consumers.get(t, ()):
                ins = [i for i in c.inputs if i]
                others = [i for i in ins if i != t]
                if len(others) > 1:
                    continue
                other = others[0] if others else None
                scalar = other is None or is_scalar_const(graph, other)
                if c.op == "Div" and ins[1] == t and not scalar and not inverted:
                    out.add(ins[0])
                elif c.op == "Mul" and not scalar and inverted:
                    out.add(other)
                elif c.op in SCALAR_CHAIN and scalar and not (c.op in ("Sub", "Pow") and ins[0] != t):
                    flips = (c.op == "Reciprocal" or (c.op == "Div" and ins[1] == t)  # 1 / t
                             or (c.op == "Pow" and float(np.ravel(graph.value(other))[0]) < 0))
                    for o in c.outputs:
                        if o and o not in seen:
                            seen.add(o)
                            nxt.append((o, inverted ^ flips))
        frontier = nxt
    return out


def norm_statistics(graph: Graph) -> Mapping[str, int]:
    """ReduceMean node → the axis it takes a normalisation statistic over (computed once per graph)."""
    return graph.memo("norm_statistics", find)


def find(graph: Graph) -> dict[str, int]:
    means = {n.name: (n, a) for n in graph.nodes if (a := reduced_axis(graph, n)) is not None}
    scale: dict[str, int] = {}
    for name, (n, axis) in means.items():
        b = squared(graph, n.inputs[0])
        if b is not None and b in normalised(graph, n.outputs[0]):
            scale[name] = axis
    found = dict(scale)
    scaled_inputs = {(squared(graph, means[s][0].inputs[0]), a) for s, a in scale.items()}
    for name, (n, axis) in means.items():
        x, m = n.inputs[0], n.outputs[0]
        centred = [c.outputs[0] for c in graph.consumers.get(m, ()) if c.op == "Sub" and c.inputs == (x, m)]
        if any((d, axis) in scaled_inputs for d in centred):
            found[name] = axis
        elif x in normalised(graph, m):
            found[name] = axis
    return found

"""The vocabulary of channel rules: spaces, index maps, couplings, and the registry.

A *channel space* is one axis of one tensor, ``Space(tensor, axis)``; a rule also may create a *virtual*
space (e.g. the groups of a grouped conv) that belongs to no tensor. A rule reads one node and says which
spaces must shrink together and how their indices correspond (an :data:`IndexMap`), or freezes spaces it
cannot map. Whatever axis of a node's tensors the rule does not mention is frozen for it: an op is never
silently treated as element-wise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

import numpy as np

from graphprune.ir import Graph, Node


@dataclass(frozen=True, order=True)
class Space:
    """Axis ``axis`` of tensor ``tensor``; ``virtual`` spaces (node-local) name no tensor."""

    tensor: str
    axis: int
    virtual: bool = False
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # spaces key every dict and set of the analysis (millions of lookups on deep graphs): hash once
        object.__setattr__(self, "_hash", hash((self.tensor, self.axis, self.virtual)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # rebuild (and re-hash) on unpickling: str hashes differ between processes
        return (Space, (self.tensor, self.axis, self.virtual))

    def __str__(self) -> str:
        return f"{self.tensor}[{self.axis}]" if not self.virtual else f"<{self.tensor}>"


# ---- index maps: A[i] corresponds to B[...] --------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A[i] ↔ B[i]."""

    def fits(self, a: int, b: int) -> bool:
        return a == b

    def pairs(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(a)
        return i, i


@dataclass(frozen=True)
class Offset:
    """A[i] ↔ B[k + i]: a Concat input inside its output, a Split/Slice output inside its input."""

    k: int

    def fits(self, a: int, b: int) -> bool:
        return self.k >= 0 and self.k + a <= b

    def pairs(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(a)
        return i, i + self.k


@dataclass(frozen=True)
class Block:
    """A[i] ↔ B[s·i … s·i+s−1]: a channel and the features it becomes after Flatten."""

    s: int

    def fits(self, a: int, b: int) -> bool:
        return self.s >= 1 and a * self.s == b

    def pairs(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(np.arange(a), self.s), np.arange(b)


@dataclass(frozen=True, eq=False)
class Gather:
    """A[i] ↔ B[p[i]]: a permutation such as a channel shuffle (``p`` may also be many-to-one)."""

    p: np.ndarray

    def fits(self, a: int, b: int) -> bool:
        return len(self.p) == a and (a == 0 or 0 <= int(self.p.min()) and int(self.p.max()) < b)

    def pairs(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(a), np.asarray(self.p, dtype=np.int64)


IndexMap = Union[Identity, Offset, Block, Gather]
IDENTITY = Identity()


@dataclass(frozen=True)
class Coupling:
    """Spaces ``a`` and ``b`` shrink together, ``a``'s index i matching ``b``'s per ``map``."""

    a: Space
    b: Space
    map: IndexMap
    node: str


@dataclass(frozen=True)
class Freeze:
    space: Space
    reason: str
    node: str
    explicit: bool = True  # False: the rule did not mention the axis, so it was frozen by default


@dataclass(frozen=True)
class NodeChannels:
    """What one rule says about one node."""

    couplings: tuple[Coupling, ...]
    freezes: tuple[Freeze, ...]
    virtual: tuple[tuple[Space, int], ...] = ()
    stats: frozenset[str] = frozenset()  # parameter tensors that are statistics, not weights (BN mean/var)
    alternatives: tuple["Alternative", ...] = ()
    renormalised: tuple["Renormalised", ...] = ()


@dataclass(frozen=True)
class Renormalised:
    """Node ``node`` takes statistics (a mean, a variance) over ``space``. The space may shrink: the pruned model
    then takes them over the kept channels, and that is what it is verified against (the renormalised oracle,
    :func:`graphprune.verify.masked.masked_model`). ``kind``: the op whose statistic it is (``ReduceMean``,
    ``LayerNormalization`` …)."""

    node: str
    space: Space
    kind: str


@dataclass(frozen=True)
class Alternative:
    """A reshape segment that could couple another axis of its split/merged run than the one it did.

    ``key`` names the choice; ``chosen`` is the space the rule coupled (to ``via``, the single axis of the
    segment), ``other`` one it left frozen, and ``option`` the choice value that would couple ``other`` instead
    (see :func:`graphprune.rules.shape.couple_merged`)."""

    key: str
    chosen: Space
    other: Space
    option: str = "inner"
    via: Space | None = None


class RuleError(Exception):
    """A rule found the node inconsistent with what it expects; the node's spaces get frozen."""


class RuleContext:
    """Builder handed to a rule: shape lookups plus ``couple`` / ``freeze`` / ``virtual``."""

    def __init__(self, graph: Graph, node: Node, choices: Mapping[str, str] | None = None, *,
                 query_heads: bool = False):
        self.graph, self.node = graph, node
        self.choices = choices or {}
        # the analysis option: an axis broadcast from size 1 (Expand's copies) may shrink, and a Reshape merging it
        # couples through it (grouped-query attention loses query heads inside each KV group, the KV heads kept)
        self.query_heads = query_heads
        self._alternatives: list[Alternative] = []
        self._renormalised: list[Renormalised] = []
        self._couplings: list[Coupling] = []
        self._freezes: list[Freeze] = []
        self._virtual: list[tuple[Space, int]] = []
        self._stats: set[str] = set()
        self.accounted: set[Space] = set()

    # lookups
    def shape(self, name: str | None) -> tuple[int, ...]:
        shape = self.graph.shape(name) if name else None
        if shape is None:
            raise RuleError(f"shape of '{name}' unknown")
        return shape

    def rank(self, name: str | None) -> int:
        return len(self.shape(name))

    def value(self, name: str | None) -> np.ndarray | None:
        return self.graph.value(name)

    def attr(self, key: str, default=None):
        return self.node.attr(key, default)

    def size(self, space: Space) -> int:
        if space.virtual:
            return dict(self._virtual)[space]
        return self.shape(space.tensor)[space.axis]

    # building
    def space(self, tensor: str, axis: int) -> Space:
        rank = self.rank(tensor)
        if not -rank <= axis < rank:
            raise RuleError(f"axis {axis} out of range for '{tensor}' of rank {rank}")
        return Space(tensor, axis % rank)

    def virtual(self, label: str, size: int) -> Space:
        space = Space(f"{self.node.name}#{label}", 0, virtual=True)
        self._virtual.append((space, size))
        return space

    def couple(self, a: Space, b: Space, index_map: IndexMap = IDENTITY) -> None:
        sa, sb = self.size(a), self.size(b)
        if not index_map.fits(sa, sb):
            raise RuleError(f"{index_map} does not fit {a} (size {sa}) to {b} (size {sb})")
        self._couplings.append(Coupling(a, b, index_map, self.node.name))
        self.accounted.update((a, b))

    def couple_axes(self, a: str, a_axis: int, b: str, b_axis: int, index_map: IndexMap = IDENTITY) -> None:
        self.couple(self.space(a, a_axis), self.space(b, b_axis), index_map)

    def freeze(self, space: Space, reason: str) -> None:
        self._freezes.append(Freeze(space, reason, self.node.name))
        self.accounted.add(space)

    def freeze_axis(self, tensor: str, axis: int, reason: str) -> None:
        self.freeze(self.space(tensor, axis), reason)

    def leave(self, space: Space) -> None:
        """Neither couple nor freeze ``space``: it may shrink with whatever else it is coupled to (an Expand's
        broadcast copies, which are identical: dropping some of them is exact)."""
        self.accounted.add(space)

    def choice(self, label: str, default: str) -> str:
        """The layout choice recorded for ``label`` of this node (see :mod:`graphprune.channels`)."""
        return self.choices.get(f"{self.node.name}:{label}", default)

    def alternative(self, label: str, chosen: Space, other: Space, option: str = "inner",
                    via: Space | None = None) -> None:
        self._alternatives.append(Alternative(f"{self.node.name}:{label}", chosen, other, option, via))

    def renormalise(self, space: Space) -> None:
        """This node takes statistics over ``space``, which may shrink (see :class:`Renormalised`): only for
        normalisations, whose meaning over fewer channels is known."""
        self._renormalised.append(Renormalised(self.node.name, space, self.node.op))
        self.accounted.add(space)

    def mark_stats(self, *tensors: str | None) -> None:
        self._stats.update(t for t in tensors if t)

    def result(self) -> NodeChannels:
        return NodeChannels(tuple(self._couplings), tuple(self._freezes), tuple(self._virtual), frozenset(self._stats),
                            tuple(self._alternatives), tuple(self._renormalised))


# ---- registry ---------------------------------------------------------------------------------------------

RuleFn = Callable[[RuleContext], None]


@dataclass(frozen=True)
class Rule:
    ops: tuple[str, ...]
    apply: RuleFn
    family: str
    doc: str = field(default="", compare=False)


RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the channel rule for ``ops`` (ONNX op names; the torch frontend maps to them)."""

    def register(fn: RuleFn) -> RuleFn:
        family = fn.__module__.rsplit(".", 1)[-1]
        r = Rule(tuple(ops), fn, family, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        for op in ops:
            if op in RULES:
                raise ValueError(f"two channel rules for op {op}")
            RULES[op] = r
        return fn

    return register

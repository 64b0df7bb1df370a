"""The channel-dependency graph: channel spaces as networkx nodes, couplings as edges, groups and units.

* A **group** is a connected component of spaces: everything that must change size together.
* A **unit** is an equivalence class of *atoms* ``(space, index)`` under the couplings' index maps: the
  smallest thing that can be removed (channel 7 of a residual stream in every conv, BN and add it touches).
  Units come from one sparse connected-components call over all atoms, so the cost is linear in the number
  of channels and no Python loop runs per channel.
* A group is **frozen** when any of its spaces is: graph inputs and outputs, axes a rule cannot map, ops with
  no rule at all, ``--exclude``. Frozen groups keep every channel; the reasons are kept for the report.
"""

from __future__ import annotations

import fnmatch
import gc
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

import networkx as nx
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graphprune.errors import UsageError
from graphprune.ir import Graph, Node, is_weight_type
from graphprune.channels.rules import RULES, Coupling, Freeze, NodeChannels, Renormalised, RuleContext, RuleError, Space


@dataclass(frozen=True, eq=False)
class Group:
    """Spaces that shrink together. ``labels[space][i]`` is the unit of atom i (only when prunable)."""

    id: int
    spaces: tuple[Space, ...]
    sizes: Mapping[Space, int]
    params: tuple[Space, ...]
    freezes: tuple[Freeze, ...]
    labels: Mapping[Space, np.ndarray]
    n_units: int
    coupled: bool  # at least one coupling: a real channel group rather than a lone axis

    @property
    def frozen(self) -> bool:
        return bool(self.freezes)

    @property
    def prunable(self) -> bool:
        return not self.freezes and bool(self.params) and self.n_units > 1

    @property
    def candidate(self) -> bool:
        """Worth reporting: coupled channels that hold parameters (spatial and kernel axes are not)."""
        return self.coupled and bool(self.params)

    def reasons(self, limit: int = 3) -> list[str]:
        """Distinct freeze reasons, explicit ones first."""
        ordered = sorted(self.freezes, key=lambda f: not f.explicit)
        seen = dict.fromkeys(f"{f.reason} ({f.space} at {f.node})" if f.node else f"{f.reason} ({f.space})" for f in ordered)
        return list(seen)[:limit]


@dataclass(frozen=True, eq=False)
class ChannelGraph:
    """The analysis of one graph: the networkx space graph, its groups, and what each rule said."""

    graph: Graph
    nx: nx.MultiGraph
    groups: tuple[Group, ...]
    group_of: Mapping[Space, int]
    stats: frozenset[str]
    unmapped: tuple[Node, ...]  # nodes with no channel rule
    renormalised: tuple[Renormalised, ...] = ()  # statistics over spaces that may shrink (normalisations)
    query_heads: bool = False  # analysed with the query_heads option (see RuleContext.query_heads)

    @property
    def candidates(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.candidate)

    @property
    def prunable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.prunable)

    def group(self, space: Space) -> Group:
        return self.groups[self.group_of[space]]


MAX_LAYOUT_ROUNDS = 8


def analyse(graph: Graph, exclude: Iterable[str] = (), *, held: Iterable[str] = (),
            query_heads: bool = False) -> ChannelGraph:
    """Run every node's rule, build the space graph, and derive groups and units. ``query_heads``: an axis
    broadcast by Expand may shrink and the Reshape merging it couples through it (:class:`RuleContext`): grouped-
    query attention then loses query heads inside every KV group (the same ones in each) instead of whole groups.

    Reshapes that split or merge axes can couple the outermost or the innermost axis of the run (see
    :func:`graphprune.rules.shape.couple_merged`). They start with the outermost; where the coupled axes end up
    frozen while the other axes are frozen by nothing but these choices, the choices switch and the analysis
    runs again (a few rounds at most; each segment switches once).

    ``exclude``: the user's fnmatch patterns on node names; ``held``: exact node names the emitter asked to keep
    whole (:data:`HELD_REASON`). Both freeze everything the node touches, each with its own reason."""
    excluded = dict.fromkeys(excluded_nodes(graph, list(exclude)), "excluded by --exclude")
    excluded.update(dict.fromkeys(held, HELD_REASON))
    choices: dict[str, str] = {}
    # The analysis allocates a few objects per space and coupling and frees none of them until it returns;
    # CPython's cyclic GC would rescan them all on every generation-2 collection, which made the analysis of a
    # 10,000-layer graph grow faster than linearly (7.4 s instead of 5.0 s). Nothing here forms cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(MAX_LAYOUT_ROUNDS):
            cg, alternatives = analyse_once(graph, excluded, choices, query_heads)
            flips = layout_flips(cg, [a for a in alternatives if a.key not in choices])
            if not flips:
                break
            choices.update(flips)
    finally:
        if gc_was_enabled:
            gc.enable()
    return cg


def layout_flips(cg: "ChannelGraph", alternatives: list) -> dict[str, str]:
    """Segments to switch to another axis of their run, decided per group of the axes they leave frozen.

    A group qualifies when it holds parameters, each of those segments' coupled axis is frozen anyway, and
    every freeze that would still be in the group after the switch is a default freeze by one of the segments
    that left it out. The switch cuts each segment's coupled axis from its single axis, so freezes reachable only
    through that link leave (a bidirectional RNN's frozen direction axis, when a head reads both its merged
    outputs and its final hidden state). Flips in one round never touch the same group twice (the two halves of
    a channel shuffle must not both switch)."""
    by_other: dict[int, list] = {}
    for alt in alternatives:
        by_other.setdefault(cg.group_of[alt.other], []).append(alt)
    flips: dict[str, str] = {}
    touched: set[int] = set()
    for gid, alts in by_other.items():
        group = cg.groups[gid]
        nodes = {a.key.rsplit(":", 1)[0] for a in alts}
        if not group.params or not all(f.node in nodes and not f.explicit for f in freezes_after_switch(cg, alts)):
            continue
        if not all(cg.group(a.chosen).frozen for a in alts):
            continue
        groups = {gid} | {cg.group_of[a.chosen] for a in alts}
        if groups & touched:
            continue
        touched |= groups
        flips.update({a.key: a.option for a in alts})
    return flips


def freezes_after_switch(cg: "ChannelGraph", alts: list) -> list[Freeze]:
    """The freezes of the group of ``alts``' other axes that stay in it once the alternatives switch: those on
    spaces still connected to the other axes, or to the single axes they join, without the links they cut."""
    group = cg.groups[cg.group_of[alts[0].other]]
    if all(f.node in {a.key.rsplit(":", 1)[0] for a in alts} and not f.explicit for f in group.freezes):
        return list(group.freezes)  # nothing to cut away: the common case, without a graph search
    cut = [(a.chosen, a.via, k) for a in alts if a.via is not None and cg.nx.has_edge(a.chosen, a.via)
           for k, d in cg.nx[a.chosen][a.via].items() if d["node"] == a.key.rsplit(":", 1)[0]]
    view = nx.restricted_view(cg.nx, [], cut)
    kept: set[Space] = set()
    for start in {s for a in alts for s in (a.other, a.via) if s is not None}:
        if start not in kept:
            kept |= nx.node_connected_component(view, start)
    return [f for gid in {cg.group_of[s] for s in kept} for f in cg.groups[gid].freezes if f.space in kept]


def analyse_once(graph: Graph, excluded: dict[str, str], choices: dict[str, str], query_heads: bool = False):
    said = [node_channels(graph, n, excluded.get(n.name), choices, query_heads) for n in graph.nodes]
    freezes = [f for s in said for f in s.freezes] + interface_freezes(graph)
    couplings = [c for s in said for c in s.couplings]
    virtual = dict(v for s in said for v in s.virtual)
    g = space_graph(graph, couplings, virtual)
    groups, group_of = derive_groups(graph, g, couplings, freezes)
    unmapped = tuple(n for n in graph.nodes if rule_key(n) not in RULES)
    stats = frozenset(t for s in said for t in s.stats)
    alternatives = [a for s in said for a in s.alternatives]
    renormalised = tuple(r for s in said for r in s.renormalised)
    return (ChannelGraph(graph, g, groups, MappingProxyType(group_of), stats, unmapped, renormalised, query_heads),
            alternatives)


HELD_REASON = ("kept whole so the pruned module stays its own class: its forward or its Hugging Face config "
               "fixes this size")


def excluded_nodes(graph: Graph, patterns: list[str]) -> set[str]:
    """Node names matched by ``--exclude`` patterns (fnmatch); a pattern matching nothing is an error."""
    out: set[str] = set()
    for pat in patterns:
        hit = {n.name for n in graph.nodes if fnmatch.fnmatchcase(n.name, pat) or fnmatch.fnmatchcase(n.source, pat)}
        if not hit:
            raise UsageError(f"--exclude '{pat}' matches no node; run 'graphprune inspect' to see node names")
        out |= hit
    return out


def node_channels(graph: Graph, node: Node, excluded: str | None = None, choices: dict[str, str] | None = None,
                  query_heads: bool = False) -> NodeChannels:
    """Apply the node's rule; whatever it leaves unmapped (or everything, on failure) is frozen; ``excluded``:
    the reason the node is kept whole instead."""
    spaces = [Space(t, k) for t in node.touched if graph.shape(t) is not None for k in range(len(graph.shape(t)))]
    unknown = [t for t in node.touched if graph.shape(t) is None and not unread_output(graph, node, t)]
    rule = RULES.get(rule_key(node))
    if excluded:
        return frozen_all(spaces, node, excluded)
    if rule is None:
        return frozen_all(spaces, node, f"no channel rule for op {qualified(node)}")
    if unknown:
        return frozen_all(spaces, node, f"shape of '{unknown[0]}' unknown")
    ctx = RuleContext(graph, node, choices, query_heads=query_heads)
    try:
        rule.apply(ctx)
    except RuleError as exc:
        return frozen_all(spaces, node, f"{node.op} rule: {exc}")
    except Exception as exc:  # a malformed node (untrusted input) must freeze, not crash the run
        return frozen_all(spaces, node, f"{node.op} rule could not read the node ({type(exc).__name__}: {exc})")
    said = ctx.result()
    default = tuple(Freeze(s, f"{node.op} does not map this axis", node.name, explicit=False)
                    for s in spaces if s not in ctx.accounted)
    return NodeChannels(said.couplings, said.freezes + default, said.virtual, said.stats, said.alternatives,
                        said.renormalised)


def unread_output(graph: Graph, node: Node, tensor: str) -> bool:
    """An optional output nothing reads (a fused norm's mean, say): its unknown shape need not freeze the node."""
    return tensor in node.outputs and not graph.consumers.get(tensor) and tensor not in graph.outputs


def rule_key(node: Node) -> str:
    """The op name a rule is registered under: bare for the ONNX domain, ``domain:op`` for others
    (``com.microsoft:SkipLayerNormalization``), so an op of another domain never borrows an ONNX op's rule."""
    return node.op if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op}"


def qualified(node: Node) -> str:
    return f"{node.domain}::{node.op}" if node.domain not in ("", "ai.onnx") else node.op


def frozen_all(spaces: list[Space], node: Node, reason: str) -> NodeChannels:
    return NodeChannels((), tuple(Freeze(s, reason, node.name) for s in spaces))


def interface_freezes(graph: Graph) -> list[Freeze]:
    out = []
    for names, what in ((graph.inputs, "graph input"), (graph.outputs, "graph output")):
        for t in names:
            shape = graph.shape(t) or ()
            out += [Freeze(Space(t, k), what, "") for k in range(len(shape))]
    return out


def space_graph(graph: Graph, couplings: list[Coupling], virtual: Mapping[Space, int]) -> nx.MultiGraph:
    """networkx multigraph: one node per space (size, is_param), one edge per coupling (map, node)."""
    g = nx.MultiGraph()
    for name, t in graph.tensors.items():
        if t.shape is not None:
            is_param = t.is_const and is_weight_type(t.dtype)
            for k, d in enumerate(t.shape):
                g.add_node(Space(name, k), size=int(d), param=is_param)
    for space, size in virtual.items():
        g.add_node(space, size=int(size), param=False)
    for c in couplings:
        g.add_edge(c.a, c.b, src=c.a, map=c.map, node=c.node)
    return g


def derive_groups(graph: Graph, g: nx.MultiGraph, couplings: list[Coupling],
                  freezes: list[Freeze]) -> tuple[tuple[Group, ...], dict[Space, int]]:
    frozen_by: dict[Space, list[Freeze]] = {}
    for f in freezes:
        frozen_by.setdefault(f.space, []).append(f)
    # each component in Space order: a set's order follows string hashing, which Python seeds per process, and the
    # unit numbering (so ties in a ranking and seeded draws) would differ from run to run
    components = [sorted(c, key=order_key) for c in nx.connected_components(g)]
    group_of = {s: gid for gid, comp in enumerate(components) for s in comp}
    size, param = dict(g.nodes(data="size")), dict(g.nodes(data="param"))  # once: networkx views are slow per call
    live = [gid for gid, comp in enumerate(components)
            if not any(s in frozen_by for s in comp) and any(param[s] for s in comp)]
    labels, n_units = unit_labels(size, [components[i] for i in live], couplings, group_of, set(live))
    groups = []
    for gid, comp in enumerate(components):
        groups.append(Group(
            id=gid, spaces=tuple(comp), sizes=MappingProxyType({s: size[s] for s in comp}),
            params=tuple(s for s in comp if param[s]),
            freezes=tuple(f for s in comp for f in frozen_by.get(s, ())),
            labels=MappingProxyType(labels.get(gid, {})), n_units=n_units.get(gid, 0),
            coupled=g.degree(comp[0]) > 0 or len(comp) > 1))
    return tuple(groups), group_of


def order_key(s: Space) -> tuple[str, int, bool]:
    """``Space``'s own order as a plain tuple: sorting a large group by it is several times faster than by the
    dataclass comparison, which builds two tuples per comparison."""
    return s.tensor, s.axis, s.virtual


def unit_labels(size: Mapping[Space, int], comps: list[list[Space]], couplings: list[Coupling],
                group_of: Mapping[Space, int], live: set[int]) -> tuple[dict[int, dict[Space, np.ndarray]], dict[int, int]]:
    """Connected components over atoms of the live groups, with one sparse call for all of them."""
    offset: dict[Space, int] = {}
    total = 0
    for comp in comps:
        for s in comp:
            offset[s] = total
            total += size[s]
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in couplings:
        if group_of[c.a] in live:
            ia, ib = c.map.pairs(size[c.a], size[c.b])
            rows.append(ia + offset[c.a])
            cols.append(ib + offset[c.b])
    r, c = np.concatenate(rows), np.concatenate(cols)
    adjacency = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(total, total))
    _, atom_label = connected_components(adjacency, directed=False)
    labels: dict[int, dict[Space, np.ndarray]] = {}
    n_units: dict[int, int] = {}
    for comp in comps:
        gid = group_of[comp[0]]
        spans = [(s, offset[s], size[s]) for s in comp]
        joined = np.concatenate([atom_label[o:o + n] for _, o, n in spans])
        uniq, compact = np.unique(joined, return_inverse=True)
        n_units[gid] = len(uniq)
        labels[gid] = {}
        pos = 0
        for s, _, n in spans:
            labels[gid][s] = compact[pos:pos + n]
            pos += n
    return labels, n_units

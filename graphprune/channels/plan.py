"""A pruning plan: which units of which groups go, and the kept indices that follow in every space.

Plans are immutable and serialisable (JSON), so ``graphprune verify`` can rebuild the masked original from
the plan stored in a pruned model's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.rules import Renormalised, Space


@dataclass(frozen=True, eq=False)
class Plan:
    """``removed[g]``: sorted unit ids removed from group g. ``keep[space]``: sorted kept atom indices, for
    every space that loses at least one atom. ``meta``: the method and its parameters, for the report.
    ``renormalised``: the normalisations whose statistics now run over fewer channels (node, space, kind): the
    oracle takes theirs over the kept channels."""

    removed: Mapping[int, np.ndarray]
    keep: Mapping[Space, np.ndarray]
    sizes: Mapping[Space, int]
    meta: Mapping[str, Any] = field(default_factory=dict)
    renormalised: tuple[Renormalised, ...] = ()

    @staticmethod
    def from_removed(cg: ChannelGraph, removed: Mapping[int, np.ndarray], meta: Mapping[str, Any] | None = None) -> "Plan":
        removed = {g: np.unique(np.asarray(u, np.int64)) for g, u in removed.items() if len(u)}
        keep: dict[Space, np.ndarray] = {}
        sizes: dict[Space, int] = {}
        for gid, units in removed.items():
            group = cg.groups[gid]
            for space, labels in group.labels.items():
                kept = np.flatnonzero(~np.isin(labels, units))
                if len(kept) < len(labels):
                    keep[space], sizes[space] = kept, len(labels)
        renormalised = tuple(dict.fromkeys(r for r in cg.renormalised if r.space in keep))
        meta = dict(meta or {}) | ({"query_heads": True} if cg.query_heads else {})  # to analyse it again alike
        return Plan(MappingProxyType(removed), MappingProxyType(keep), MappingProxyType(sizes),
                    MappingProxyType(meta), renormalised)

    @property
    def empty(self) -> bool:
        return not self.keep

    def kept(self, space: Space) -> np.ndarray | None:
        """Kept indices of ``space``, or None when it is unchanged."""
        return self.keep.get(space)

    def removed_mask(self, space: Space) -> np.ndarray:
        """Boolean array over the original atoms of ``space``: True where removed."""
        mask = np.ones(self.sizes[space], bool)
        mask[self.keep[space]] = False
        return mask

    @property
    def units_removed(self) -> int:
        return int(sum(len(u) for u in self.removed.values()))

    def to_json(self) -> str:
        spaces = [{"tensor": s.tensor, "axis": s.axis, "virtual": s.virtual, "size": self.sizes[s],
                   "removed": np.flatnonzero(self.removed_mask(s)).tolist()} for s in sorted(self.keep)]
        groups = {str(g): u.tolist() for g, u in self.removed.items()}
        renormalised = [{"node": r.node, "tensor": r.space.tensor, "axis": r.space.axis, "kind": r.kind}
                        for r in self.renormalised]
        return json.dumps({"version": 1, "groups": groups, "spaces": spaces, "meta": dict(self.meta),
                           "renormalised": renormalised}, default=str)

    @staticmethod
    def from_json(text: str) -> "Plan":
        data = json.loads(text)
        keep, sizes = {}, {}
        for s in data["spaces"]:
            space = Space(s["tensor"], int(s["axis"]), bool(s["virtual"]))
            mask = np.ones(int(s["size"]), bool)
            mask[np.asarray(s["removed"], np.int64)] = False
            keep[space], sizes[space] = np.flatnonzero(mask), int(s["size"])
        removed = {int(g): np.asarray(u, np.int64) for g, u in data["groups"].items()}
        renormalised = tuple(Renormalised(r["node"], Space(r["tensor"], int(r["axis"])), r["kind"])
                             for r in data.get("renormalised", ()))
        return Plan(MappingProxyType(removed), MappingProxyType(keep), MappingProxyType(sizes),
                    MappingProxyType(data.get("meta", {})), renormalised)

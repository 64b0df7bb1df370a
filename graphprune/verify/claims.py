"""Claims: what a pass says its output equals. A pass that changes the model returns one from ``claim`` (see
:class:`graphprune.pipeline.base.Pass`); the frontend's oracle for that claim checks it. A claim carries the data
the oracle needs (the plan, the edited weights, the decomposed layers), so a verifier never calls a pass.

| claim | the output equals … | oracle (ONNX) |
| --- | --- | --- |
| :class:`Unchanged` | its input | :func:`graphprune.verify.masked.verify_masked` with an empty plan |
| :class:`MaskedOriginal` | the original with the plan's removed units masked to zero where produced | :mod:`graphprune.verify.masked` |
| :class:`EditedWeights` | its input with these weight entries zeroed / scaled | :mod:`graphprune.verify.edits` |
| :class:`Refitted` | the original with the plan's removed units masked and these initializers holding its values | :mod:`graphprune.verify.refit` |
| :class:`TruncatedLayers` | its input with each decomposed weight replaced by its rank-r approximation | :mod:`graphprune.verify.lowrank` |
| :class:`SameFunction` | its input, within a (looser) tolerance: a value-preserving rewrite | :mod:`graphprune.verify.compare` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from graphprune.channels.plan import Plan
from graphprune.methods.edits import WeightEdit
from graphprune.methods.lowrank import Layer


@dataclass(frozen=True, eq=False)
class Claim:
    """Base of every claim. ``equals_masked``: the output still equals the masked original wherever that holds,
    so the original's dynamic dimensions may be restored by checking the plan again at a second size."""

    equals_masked: ClassVar[bool] = False


@dataclass(frozen=True, eq=False)
class Unchanged(Claim):
    equals_masked: ClassVar[bool] = True


@dataclass(frozen=True, eq=False)
class MaskedOriginal(Claim):
    plan: Plan
    equals_masked: ClassVar[bool] = True


@dataclass(frozen=True, eq=False)
class EditedWeights(Claim):
    edits: Mapping[str, WeightEdit]


@dataclass(frozen=True, eq=False)
class Refitted(Claim):
    """The masked original of ``plan`` with the initializers ``names`` holding the output's (refitted) values."""

    plan: Plan
    names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class TruncatedLayers(Claim):
    layers: tuple[Layer, ...]


@dataclass(frozen=True, eq=False)
class SameFunction(Claim):
    """Equal to the input within ``rtol`` / ``atol`` (at least the run's own tolerance); ``label`` names the check,
    ``what`` the difference it measures."""

    rtol: float = 1e-3
    atol: float = 1e-4
    label: str = "equals_input"
    what: str = "rewritten - input"
    equals_masked: ClassVar[bool] = True

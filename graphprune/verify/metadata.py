"""The metadata graphprune writes into a pruned ONNX file, and reads back to verify it again: the only module that
knows the keys and their format.

| key | value (JSON) | written by |
| --- | --- | --- |
| ``graphprune.plan`` | the channel plan (:meth:`Plan.to_json`, ``"version": 1``) | the ONNX frontend, when a plan removed channels |
| ``graphprune.input_shapes`` | ``{input: [dims]}``, the shapes the model was analysed and verified at | the ONNX frontend, with the plan |
| ``graphprune.weight_edits`` | ``{"weights": [names], "scaled": bool, …}``: weights a value-only pass edited | SiPP |
| ``graphprune.refit`` | ``{"weights": [names], "ridge": λ, "data": …}``: initializers reconstruction refitted | reconstruction |
| ``graphprune.lowrank`` | ``[layer, …]`` as :class:`graphprune.methods.lowrank.Layer` fields | low rank |

Other metadata of the input model is kept as it is. :func:`read` gives every key back as one :class:`Recorded`,
so ``graphprune verify``, ``inspect --pruned`` and ``bench`` read the same thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import onnx

from graphprune.channels.plan import Plan
from graphprune.methods.lowrank import Layer

PLAN_KEY = "graphprune.plan"
SHAPES_KEY = "graphprune.input_shapes"
EDITS_KEY = "graphprune.weight_edits"
LOWRANK_KEY = "graphprune.lowrank"
REFIT_KEY = "graphprune.refit"
PLAN_VERSION = 1  # the "version" field of the plan's JSON


@dataclass(frozen=True, eq=False)
class Recorded:
    """What a pruned file says about how it was made (empty parts where a key is absent)."""

    plan: Plan | None
    input_shapes: Mapping[str, tuple[int, ...]]
    edits: Mapping[str, Any] | None  # the weight_edits entry: {"weights": [...], "scaled": bool, ...}
    lowrank: tuple[Layer, ...]
    refit: Mapping[str, Any] | None = None  # the refit entry: {"weights": [...], "ridge": ..., "data": ...}

    @property
    def channel_plan(self) -> Plan:
        """The plan, or an empty one when the file holds none."""
        return self.plan if self.plan is not None else Plan({}, {}, {})


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def read(model: onnx.ModelProto) -> Recorded:
    """Everything graphprune recorded in ``model``."""
    found = props(model)
    plan = Plan.from_json(found[PLAN_KEY]) if PLAN_KEY in found else None
    shapes = {k: tuple(v) for k, v in json.loads(found[SHAPES_KEY]).items()} if SHAPES_KEY in found else {}
    edits = json.loads(found[EDITS_KEY]) if EDITS_KEY in found else None
    layers = tuple(Layer(**d) for d in json.loads(found.get(LOWRANK_KEY, "[]")))
    refit = json.loads(found[REFIT_KEY]) if REFIT_KEY in found else None
    return Recorded(plan, shapes, edits, layers, refit)


def write(model: onnx.ModelProto, **entries: Any) -> onnx.ModelProto:
    """``model`` (edited in place) with these entries set, every other metadata entry kept. Keywords: ``plan``
    (a :class:`Plan`), ``input_shapes``, ``edits`` (the weight_edits dict), ``lowrank`` (layers), ``refit``
    (the refit dict)."""
    encode = {"plan": (PLAN_KEY, lambda p: p.to_json()),
              "input_shapes": (SHAPES_KEY, lambda s: json.dumps({k: list(v) for k, v in s.items()})),
              "edits": (EDITS_KEY, json.dumps),
              "refit": (REFIT_KEY, json.dumps),
              "lowrank": (LOWRANK_KEY, lambda layers: json.dumps([asdict(x) for x in layers]))}
    found = props(model)
    for name, value in entries.items():
        key, to_text = encode[name]
        found[key] = to_text(value)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, found)
    return model


def edits_entry(weights: Iterable[str], scaled: bool, **info: Any) -> dict[str, Any]:
    """The weight_edits entry for :func:`write`."""
    return {"weights": sorted(weights), "scaled": bool(scaled), **info}

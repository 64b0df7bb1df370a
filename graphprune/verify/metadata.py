"""The metadata graphprune writes into a pruned ONNX file, and reads back to verify it again: the only module that
knows the keys and their format.

| key | value (JSON) | written by |
| --- | --- | --- |
| ``graphprune.plan`` | the channel plan (:meth:`Plan.to_json`, ``"version": 1``), over 1 kB as ``zlib:`` + base64 of the zlib-compressed JSON | the ONNX frontend, when a plan removed channels |
| ``graphprune.input_shapes`` | ``{input: [dims]}``, the shapes the model was analysed and verified at | the ONNX frontend, with the plan |
| ``graphprune.weight_edits`` | ``{"weights": [names], "scaled": bool, …}``: weights a value-only pass edited | SiPP |
| ``graphprune.refit`` | ``{"weights": [names], "ridge": λ, "data": …}``: initializers reconstruction refitted | reconstruction |
| ``graphprune.lowrank`` | ``[layer, …]`` as :class:`graphprune.methods.lowrank.Layer` fields | low rank |

Other metadata of the input model is kept as it is. :func:`read` gives every key back as one :class:`Recorded`,
so ``graphprune verify``, ``inspect --pruned`` and ``bench`` read the same thing.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import onnx

from graphprune.channels.plan import Plan
from graphprune.errors import ModelLoadError
from graphprune.methods.lowrank import Layer

PLAN_KEY = "graphprune.plan"
SHAPES_KEY = "graphprune.input_shapes"
EDITS_KEY = "graphprune.weight_edits"
LOWRANK_KEY = "graphprune.lowrank"
REFIT_KEY = "graphprune.refit"
PLAN_VERSION = 1  # the "version" field of the plan's JSON
COMPRESSED = "zlib:"  # prefix of a compressed entry: kept indices compress ~10x (a 16 kB model grew by its plan)
COMPRESS_FROM = 1024  # characters of JSON from which an entry is stored compressed


def packed(text: str) -> str:
    """``text`` as stored: itself when short, else compressed (see :data:`COMPRESSED`)."""
    if len(text) < COMPRESS_FROM:
        return text
    return COMPRESSED + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def unpacked(value: str) -> str:
    """The JSON text of a stored entry; a damaged compressed one is a ``ValueError``, as bad JSON is."""
    if not value.startswith(COMPRESSED):
        return value
    try:
        return zlib.decompress(base64.b64decode(value[len(COMPRESSED):], validate=True)).decode()
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged compressed entry ({type(exc).__name__})") from exc


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
    """Everything graphprune recorded in ``model``; damaged entries are a :class:`ModelLoadError` (bad input, one
    line), not a crash."""
    try:
        return parsed(props(model))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"the pruned model's graphprune metadata is damaged ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); prune the original again") from exc


def parsed(found: Mapping[str, str]) -> Recorded:
    plan = Plan.from_json(unpacked(found[PLAN_KEY])) if PLAN_KEY in found else None
    shapes = {k: tuple(v) for k, v in json.loads(found[SHAPES_KEY]).items()} if SHAPES_KEY in found else {}
    edits = json.loads(found[EDITS_KEY]) if EDITS_KEY in found else None
    layers = tuple(Layer(**d) for d in json.loads(found.get(LOWRANK_KEY, "[]")))
    refit = json.loads(found[REFIT_KEY]) if REFIT_KEY in found else None
    return Recorded(plan, shapes, edits, layers, refit)


def write(model: onnx.ModelProto, **entries: Any) -> onnx.ModelProto:
    """``model`` (edited in place) with these entries set, every other metadata entry kept. Keywords: ``plan``
    (a :class:`Plan`), ``input_shapes``, ``edits`` (the weight_edits dict), ``lowrank`` (layers), ``refit``
    (the refit dict)."""
    encode = {"plan": (PLAN_KEY, lambda p: packed(p.to_json())),
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

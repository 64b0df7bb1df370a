"""Load and validate the calibration data (or make seeded random points) for data-informed passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphprune.methods.calib import prepare
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


@dataclass(frozen=True, kw_only=True, eq=False)
class Calibrate(Pass):
    """``data``: a ``.npz`` / ``.npy`` path, arrays, a dict, batches, or None (data-free: seeded random points,
    noted in the report). At most ``max_points`` points are kept (the first ones)."""

    data: Any = None
    max_points: int = 256
    seed: int = 0
    provides = ("calib",)
    runs_on = frozenset({"onnx", "torch"})

    def call(self, state: PruneState) -> PassResult:
        calib = prepare(self.data, state.source, max_points=self.max_points, seed=self.seed)
        stats = calib.describe() | {"notes": [calib.note] if calib.note else []}
        return PassResult(state.with_(calib=calib), modified=False, stats=stats)

"""The one configuration object: the CLI builds it from flags, the Python API takes it (or its fields)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Mapping

from graphprune.errors import UsageError

VerifyMode = Literal["off", "end", "each"]


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    method: str = "magnitude"
    ratio: float = 0.5
    norm: Literal[1, 2] = 1
    scope: Literal["local", "global"] = "local"
    threshold: float | None = None
    round_to: int = 16  # measured on onnxruntime CPU: benchmarks/results/speedup_round_to.json, spine_resnet50.json
    max_group_ratio: float = 0.9
    exclude: tuple[str, ...] = ()
    strict: bool = False
    verify: VerifyMode = "end"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0
    rtol: float = 1e-4
    atol: float = 1e-5
    latency: bool = False
    # low rank (--method lowrank / --then lowrank): one rank choice; none given means energy 0.9
    energy: float | None = None
    rank_ratio: float | None = None
    sv_threshold: float | None = None
    scheme: Literal["channel", "spatial"] = "channel"
    then: tuple[str, ...] = ()  # methods run after ``method`` in the same pipeline (e.g. ("lowrank",))
    fold: bool = False  # then fold inference BatchNorm into the Conv before it and drop no-ops (passes/fold.py)
    # data-informed methods (sampling, sipp): see graphprune/calib.py and passes/sampling.py, passes/sipp.py
    calib: object = None  # .npz / .npy path, array, dict of arrays or iterable of batches; None: data-free
    max_points: int = 256  # calibration points used at most
    budget: Literal["params", "macs"] = "params"  # sampling: --ratio is the fraction of params or MACs removed
    sampling: Literal["deterministic", "randomized"] = "deterministic"  # sampling: top-k, or draws + reweighting
    delta: float = 1e-16  # failure probability δ of the sampling bound (authors' code default)
    sipp_mode: Literal["deterministic", "randomized", "hybrid"] = "deterministic"
    loss: object = None  # taylor: loss(output, targets) -> scalar tensor; None: cross-entropy (passes/taylor.py)

    def __post_init__(self) -> None:
        from graphprune.pipeline.presets import METHODS

        if self.method not in METHODS:
            raise UsageError(f"unknown method '{self.method}'; choose one of {', '.join(sorted(METHODS))}")
        if not 0.0 <= self.ratio < 1.0:
            raise UsageError(f"ratio {self.ratio} is out of range; it must be in [0, 1)")
        if self.norm not in (1, 2):
            raise UsageError(f"norm {self.norm} must be 1 or 2")
        if self.scope not in ("local", "global"):
            raise UsageError(f"scope '{self.scope}' must be 'local' or 'global'")
        if self.round_to < 1:
            raise UsageError(f"round-to {self.round_to} must be a positive integer")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise UsageError(f"max group ratio {self.max_group_ratio} must be in (0, 1)")
        if self.verify not in ("off", "end", "each"):
            raise UsageError(f"verify '{self.verify}' must be off, end or each")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "then", (self.then,) if isinstance(self.then, str) else tuple(self.then))
        from graphprune.pipeline.stages import check_config
        check_config(self)
        from graphprune.passes.taylor import check_config as check_taylor  # no torch import; taylor reads calib itself
        object.__setattr__(self, "calib", check_taylor(self))
        from graphprune.methods.calib import check_options
        check_options(self)

    @staticmethod
    def make(config: "PruneConfig | None" = None, **options) -> "PruneConfig":
        """``config`` with ``options`` applied; unknown option names are a :class:`UsageError`."""
        from dataclasses import replace

        names = {f.name for f in fields(PruneConfig)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UsageError(f"unknown option(s) {unknown}; known: {sorted(names)}")
        return replace(config or PruneConfig(), **options)

"""The one configuration object: the CLI builds it from flags, the Python API takes it (or its fields as keywords).

:class:`PruneConfig` holds what every run shares (method, ratio, round-to, exclude, verification …) and, under
``options``, the options record of each method of the pipeline (:mod:`graphprune.pipeline.presets`). It is made from
flat keywords, ``PruneConfig(method="sampling", ratio=0.5, budget="macs")``: each keyword goes to the shared fields
or to the record that declares it, and every record validates its own values. :func:`keywords` lists every keyword
with its default and help, and the CLI's ``prune`` flags are made from the same list, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Mapping

from graphprune.errors import UsageError
from graphprune.methods.calib import CalibInput
from graphprune.pipeline.presets import METHODS, THEN_METHODS, Options, check_chain, default_of, option, option_fields

VerifyMode = Literal["off", "end", "each"]
ALIGNED_ROUND_TO = 16  # measured on onnxruntime CPU: benchmarks/results/speedup_round_to.json


def default_round_to(round_to: int | None, threshold: float | None) -> int:
    """``round_to`` when given. Else 1 under a threshold, which is a statement about scores: rounding the kept count
    up to an alignment would keep units scoring <= T (dead channels of a 20-dead group under 16), so the user who
    asks for both says so; else the alignment the runtime's kernels want."""
    if round_to is not None:
        return round_to
    return 1 if threshold is not None else ALIGNED_ROUND_TO


@dataclass(frozen=True, init=False)
class PruneConfig:
    """What every run shares; the method options are in ``options`` (and readable as attributes too:
    ``config.budget``). Unknown keywords are a :class:`UsageError`."""

    method: str = option("magnitude", "scoring method (default: magnitude); 'sipp' zeroes individual weights and "
                         "does NOT shrink shapes (unstructured sparsity)", choices=tuple(sorted(METHODS)))
    ratio: float = option(0.5, "fraction to remove, in [0, 1) (default 0.5): of the model's params unless --budget "
                          "says macs or channels", type=float)
    round_to: int | None = option(None, "keep a multiple of N channels per group (default 16, measured: misaligned "
                                  "counts lose much of the onnxruntime speed-up; 1 with --threshold, so a threshold "
                                  "removes exactly the units scoring <= T; groups of at most N channels are not "
                                  "rounded)", type=int, metavar="N")
    exclude: tuple[str, ...] = option((), "never prune channels touched by nodes matching this name pattern "
                                      "(fnmatch; repeatable)", action="append", metavar="PATTERN")
    strict: bool = option(False, "fail (exit 3) if any op has no channel rule", action="store_true")
    verify: VerifyMode = option("end", "verification (default: end)", choices=("off", "end", "each"))
    input_shapes: Mapping[str, tuple[int, ...]] = option({}, "static input shapes", cli=None)
    seed: int = option(0, "seed for verification inputs and random choices", type=int)
    rtol: float = option(1e-4, "relative tolerance of every equality check (default 1e-4)", type=float, metavar="R")
    atol: float = option(1e-5, "absolute tolerance, scaled by the largest output, of every equality check (default "
                         "1e-5)", type=float, metavar="A")
    require_removal: bool = option(False, "fail (exit 5, nothing written) when the run removes nothing, e.g. every "
                                   "channel group frozen", action="store_true")
    latency: bool = option(False, "measure latency before and after", action="store_true")
    eval_data: Any = option(None, "labelled data to report top-1 accuracy on, before and after: .npz with arrays "
                            "named like the model's inputs (axis 0 = points) and integer 'labels' for the first "
                            "output's class axis 1", cli=("--eval",), metavar="DATA.npz")
    then: tuple[str, ...] = option((), "run this method after --method in the same pipeline (e.g. --then lowrank)",
                                   action="append", choices=THEN_METHODS)
    fold: bool = option(False, "then fold BatchNorm into the Conv before it and drop Identity / Dropout (verified to "
                        "equal the unfolded model within tolerance)", action="store_true")
    options: Mapping[str, Options] = option({}, "the options record of each method of the pipeline", cli=None)

    def __init__(self, **values: Any):
        shared = {f.name for f in dataclasses.fields(PruneConfig)} - {"options"}
        methods = option_fields()
        unknown = sorted(set(values) - shared - set(methods))
        if unknown:
            raise UsageError(f"unknown option(s) {unknown}; known: {sorted(shared | set(methods))}")
        for f in dataclasses.fields(PruneConfig):
            if f.name != "options":
                object.__setattr__(self, f.name, values[f.name] if f.name in values else default_of(f))
        object.__setattr__(self, "round_to", default_round_to(self.round_to, values.get("threshold")))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "then", (self.then,) if isinstance(self.then, str) else tuple(self.then))
        object.__setattr__(self, "input_shapes", MappingProxyType(dict(self.input_shapes or {})))
        if self.eval_data is not None:  # never deep-copied, printed short (see CalibInput)
            object.__setattr__(self, "eval_data", CalibInput(self.eval_data))
        self.check_shared()
        given = {k: v for k, v in values.items() if k in methods}
        object.__setattr__(self, "options", MappingProxyType(self.method_options(given, methods)))

    def check_shared(self) -> None:
        check_chain(self.method, self.then)
        if not 0.0 <= self.ratio < 1.0:
            raise UsageError(f"ratio {self.ratio} is out of range; it must be in [0, 1)")
        if int(self.round_to) != self.round_to or self.round_to < 1:
            raise UsageError(f"round-to {self.round_to} must be a positive integer")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise UsageError(f"{name} {value} must be a non-negative number")
        if self.verify not in ("off", "end", "each"):
            raise UsageError(f"verify '{self.verify}' must be off, end or each")

    def method_options(self, given: Mapping[str, Any], fields: Mapping[str, dataclasses.Field]) -> dict[str, Options]:
        """Each method's record from ``given``. Every record is built, so every given value is validated; the
        records of the pipeline's methods are kept (and their ``require`` run). A value other than its default that
        no kept record reads is refused (``--reconstruct`` with SiPP was run without refitting and said nothing),
        with the option's own message where it has one."""
        built = {name: m.options(**{k: v for k, v in given.items() if k in names(m.options)})
                 for name, m in METHODS.items()}
        chain = (self.method, *self.then)
        kept = {name: built[name] for name in chain}
        for name, value in given.items():
            f = fields[name]
            read = any(name in names(METHODS[m].options) for m in chain)
            if not read and not is_default(value, default_of(f)):
                readers = ", ".join(m for m, spec in METHODS.items() if name in names(spec.options))
                message = f.metadata.get("unused") or "{flag} is read by {readers}, not by '{method}'"
                raise UsageError(message.format(method="' / '".join(chain), flag=flag(name), readers=readers))
        return {name: METHODS[name].require(opts) if METHODS[name].require else opts for name, opts in kept.items()}

    def __getattr__(self, name: str) -> Any:
        """A method option by name: the value of the pipeline method that reads it, else its default."""
        fields = option_fields()
        if name.startswith("_") or name not in fields:
            raise AttributeError(f"'PruneConfig' has no attribute '{name}'")
        for opts in self.__dict__.get("options", {}).values():
            if name in names(type(opts)):
                return getattr(opts, name)
        return default_of(fields[name])

    def flat(self) -> dict[str, Any]:
        """Every keyword with its value (method options of other methods at their defaults): what
        ``PruneConfig(**flat)`` makes again, and what the report lists as the run's options."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(PruneConfig) if f.name != "options"}
        return out | {name: getattr(self, name) for name in option_fields()}

    @staticmethod
    def make(config: "PruneConfig | None" = None, **options: Any) -> "PruneConfig":
        """``config`` with ``options`` applied; unknown option names are a :class:`UsageError`."""
        return PruneConfig(**((config.flat() if config is not None else {}) | options))


def is_default(value: Any, default: Any) -> bool:
    """``value`` is the default (compared by value for plain scalars and tuples only: data arrays are never)."""
    return value is default or (isinstance(value, (bool, int, float, str, tuple)) and value == default)


def names(record: type) -> set[str]:
    return {f.name for f in dataclasses.fields(record)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def default(name: str) -> Any:
    """The default value of keyword ``name``."""
    return default_of(keywords()[name])


def keywords() -> dict[str, dataclasses.Field]:
    """Every keyword of :class:`PruneConfig` (shared first, then the method options), with its description: the
    CLI's ``prune`` flags come from here."""
    shared = {f.name: f for f in dataclasses.fields(PruneConfig) if f.name != "options"}
    return shared | option_fields()

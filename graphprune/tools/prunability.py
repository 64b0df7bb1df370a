"""Prunability (Kuhn et al., arXiv 2103.06002) and prune potential (Liebenwein et al., MLSys 2021).

Prunability α is the smallest fraction of a model that can be kept, pruning *without retraining*, such that the
loss on a data set rises by at most a tolerance β. Here a model is pruned by any graphprune method at
``ratio = 1 − kept`` (global magnitude by default: ``kept`` is the fraction of channels kept) and α is reported
both as that requested fraction and as the fraction of parameters actually kept (what the paper calls α).

* With integer ``labels`` the loss is the cross-entropy of the first output (logits, class axis 1) and a point is
  within tolerance when ``loss ≤ (1 + β) · loss(unpruned)``; accuracy is measured too, and the *prune potential*
  is the smallest kept fraction whose accuracy is at most ``accuracy_tolerance`` (default 0.005, i.e. 0.5
  percentage points, absolute) below the unpruned model's.
* Without labels the loss is the relative drift of the outputs from the unpruned model's,
  ``sqrt(Σ‖y − y₀‖² / Σ‖y₀‖²)`` over all outputs, and a point is within tolerance when ``drift ≤ β``.

The search (:func:`smallest_within`) is a pure function of a callable ``value(kept)``: it evaluates a grid of kept
fractions, brackets the answer between the smallest grid point from which every larger grid point is within the
limit and the grid point below it, and bisects that bracket down to ``resolution``. A curve that is not monotone
(a grid point below the answer that is within the limit again) is reported in the notes rather than hidden.

    r = graphprune.prunability("model.onnx", "data.npz", tolerance=0.1)
    r = graphprune.prunability(module, {"x": x, "labels": y})       # torch: pruned and evaluated in torch
    print(r.summary()); r.plot("curve.png"); r.to_dict()
"""

from __future__ import annotations

import io as _io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from graphprune import api, io
from graphprune.config import PruneConfig, default
from graphprune.errors import UsageError
from graphprune.frontends.onnx.lower import to_ir
from graphprune.frontends.registry import frontend_for
from graphprune.methods.calib import ActivationRunner, as_dict, model_inputs, validate
from graphprune.methods.evaluate import check_labels
from graphprune.pipeline.presets import METHODS

LABELS = "labels"


# ---- the search: pure, over a callable ---------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """Result of :func:`smallest_within`: ``answer`` is the smallest kept fraction found within the limit
    (``None`` when even the largest grid point is not), ``bracket`` the final (not within, within) pair."""

    answer: float | None
    bracket: tuple[float, float]
    evaluations: tuple[tuple[float, float, bool], ...]  # (kept, value, within) in the order evaluated
    non_monotone: tuple[float, ...] = ()  # grid points below the answer that are within the limit again


def kept_grid(n: int) -> list[float]:
    """``n`` evenly spaced kept fractions ``1/n, 2/n, …, 1``."""
    if int(n) != n or n < 2:
        raise UsageError(f"grid {n} must be an integer of at least 2")
    return [round(i / n, 10) for i in range(1, int(n) + 1)]


def smallest_within(value: Callable[[float], float], limit: float, grid: Sequence[float], *,
                    resolution: float = 0.01) -> Search:
    """The smallest kept fraction ``k`` with ``value(k) ≤ limit``, by grid then bisection.

    ``value`` is called at most once per distinct ``k`` (in (0, 1]); NaN counts as not within the limit. The grid
    brackets the answer: ``hi`` is the smallest grid point from which every larger grid point is within the limit,
    ``lo`` the grid point below it (or 0, taken as not within: nothing kept). Bisection then halves the bracket
    until ``hi − lo ≤ resolution``; the answer is ``hi``, so it is always a point that was measured within.
    """
    if not resolution > 0:
        raise UsageError(f"resolution {resolution} must be positive")
    points = sorted({float(k) for k in grid})
    if not points or points[0] <= 0 or points[-1] > 1:
        raise UsageError("grid points must be kept fractions in (0, 1]")
    cache: dict[float, tuple[float, bool]] = {}
    order: list[tuple[float, float, bool]] = []

    def within(k: float) -> bool:
        key = round(k, 12)
        if key not in cache:
            v = float(value(key))
            cache[key] = (v, bool(v <= limit))  # NaN <= x is False
            order.append((key, v, cache[key][1]))
        return cache[key][1]

    flags = [within(k) for k in points]
    if not flags[-1]:
        return Search(None, (points[-1], points[-1]), tuple(order))
    i = len(points) - 1
    while i > 0 and flags[i - 1]:
        i -= 1
    hi, lo = points[i], (points[i - 1] if i > 0 else 0.0)
    while hi - lo > resolution * (1 + 1e-9):
        mid = round((lo + hi) / 2, 12)
        if within(mid):
            hi = mid
        else:
            lo = mid
    again = tuple(k for k, f in zip(points, flags) if f and k < lo)
    return Search(hi, (lo, hi), tuple(order), again)


# ---- one evaluated point and the result --------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    kept: float  # requested kept fraction; the method ran at ratio = 1 − kept
    ratio: float
    params: int  # parameters actually kept (non-zero ones for sipp, which only zeroes weights)
    params_fraction: float  # params / params of the unpruned model
    loss: float
    accuracy: float | None


@dataclass(frozen=True, eq=False)
class PrunabilityResult:
    model: str
    method: str
    loss_kind: str  # "cross_entropy" (labels given) or "output_drift"
    tolerance: float
    accuracy_tolerance: float | None
    points: int  # data points evaluated
    baseline: Point
    limit: float  # loss limit: (1 + β)·baseline loss, or β for drift
    alpha: Point | None  # prunability
    potential: Point | None  # prune potential (labels only)
    curve: tuple[Point, ...]  # every evaluated point, by kept fraction
    options: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def criterion(self) -> str:
        if self.loss_kind == "cross_entropy":
            return f"cross-entropy with labels <= (1 + {self.tolerance:g}) x unpruned ({self.limit:.4g})"
        return f"relative output drift from the unpruned model <= {self.tolerance:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "method": self.method, "loss": self.loss_kind, "criterion": self.criterion,
            "tolerance": self.tolerance, "accuracy_tolerance": self.accuracy_tolerance, "points": self.points,
            "limit": self.limit, "baseline": asdict(self.baseline),
            "prunability": asdict(self.alpha) if self.alpha else None,
            "prune_potential": asdict(self.potential) if self.potential else None,
            "curve": [asdict(p) for p in self.curve], "options": dict(self.options), "notes": list(self.notes),
        }

    def summary(self) -> str:
        """The table and the answers, as plain text."""
        acc = self.baseline.accuracy is not None
        kind = "cross-entropy with labels" if self.loss_kind == "cross_entropy" else "output drift (no labels given)"
        lines = [f"prunability of {self.model}: method {self.method}, {self.points} data points",
                 f"loss: {kind}; unpruned loss {self.baseline.loss:.4g}"
                 + (f", accuracy {100 * self.baseline.accuracy:.2f}%" if acc else ""),
                 f"within tolerance: {self.criterion}", "",
                 f"{'kept':>6} {'ratio':>6} {'params kept':>18} {'loss':>10}" + (f" {'accuracy':>9}" if acc else "")
                 + "  within"]
        for p in self.curve:
            lines.append(f"{p.kept:6.3f} {p.ratio:6.3f} {p.params:>10,} {100 * p.params_fraction:6.2f}% "
                         f"{p.loss:10.4g}" + (f" {100 * p.accuracy:8.2f}%" if acc else "")
                         + f"  {'yes' if p.loss <= self.limit else 'no'}")
        lines.append("")
        lines.append("prunability α: " + describe(self.alpha, acc))
        if self.accuracy_tolerance is not None:
            lines.append(f"prune potential (accuracy within {100 * self.accuracy_tolerance:g} points): "
                         + describe(self.potential, acc))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None, *, input_path: Path | None = None) -> bytes:
        """Loss (and accuracy) against the fraction of parameters kept, α and the prune potential marked; PNG
        bytes, also written atomically to ``path`` when given."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [100 * p.params_fraction for p in self.curve]
        shown = [(x, p.loss) for x, p in zip(xs, self.curve) if p.loss > 0 and math.isfinite(p.loss)]  # log axis
        if shown:
            ax.plot(*zip(*shown), "o-", color="C0", ms=3, label=self.loss_kind.replace("_", " "))
            ax.set_yscale("log")
        if self.limit > 0:
            ax.axhline(self.limit, color="C0", ls=":", lw=1, label=f"limit ({self.limit:.3g})")
        ax.set_xlabel("parameters kept (%)")
        ax.set_ylabel("cross-entropy" if self.loss_kind == "cross_entropy" else "relative output drift")
        if self.alpha:
            ax.axvline(100 * self.alpha.params_fraction, color="C3", lw=1.2,
                       label=f"prunability α = {100 * self.alpha.params_fraction:.1f}%")
        if self.potential:
            ax.axvline(100 * self.potential.params_fraction, color="C2", lw=1.2, ls="--",
                       label=f"prune potential = {100 * self.potential.params_fraction:.1f}%")
        handles, labels = ax.get_legend_handles_labels()
        if self.baseline.accuracy is not None:
            ax2 = ax.twinx()
            ax2.plot(xs, [100 * p.accuracy for p in self.curve], "s-", color="C1", ms=3, label="accuracy")
            ax2.set_ylabel("accuracy (%)")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8, loc="best")
        ax.set_title(f"{Path(self.model).name}: {self.method}, no retraining, β = {self.tolerance:g}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        data = buf.getvalue()
        if path is not None:
            io.write_bytes_atomic(io.check_output(Path(path), input_path), data)
        return data


def describe(p: Point | None, acc: bool) -> str:
    if p is None:
        return "none (not even the largest grid point is within tolerance)"
    return (f"kept {p.kept:.3f} (ratio {p.ratio:.3f}) -> {100 * p.params_fraction:.2f}% of params ({p.params:,}); "
            f"loss {p.loss:.4g}" + (f", accuracy {100 * p.accuracy:.2f}%" if acc and p.accuracy is not None else ""))


# ---- losses --------------------------------------------------------------------------------------------------


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy of ``logits`` (class axis 1) against integer ``labels``, and accuracy."""
    z = np.moveaxis(np.asarray(logits, np.float64), 1, -1)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return float(-picked.mean()), float((z.argmax(axis=-1) == labels).mean())


def drift(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    num = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
              for a, b in zip(outputs, reference))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in reference)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


# ---- the model-level driver ----------------------------------------------------------------------------------


class Evaluator(Protocol):
    """Backend interface: ``outputs(kept) -> (list of output arrays, params kept)`` and ``params0``."""

    params0: int
    n_points: int
    name: str

    def outputs(self, kept: float) -> tuple[list[np.ndarray], int]:
        """The model pruned to keep ``kept``, run on the data: its outputs and its parameter count."""


def prune_options(method: str, kept: float, base: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(base)
    if METHODS[method].sizes == "rank":  # no ratio: the kept fraction is each layer's rank fraction
        opts.update(rank_ratio=kept, ratio=0.0)
    else:
        opts["ratio"] = round(1.0 - kept, 12)
    return opts


class OnnxEvaluator(Evaluator):
    def __init__(self, model, data, labels, *, method: str, input_shapes, prune_kw: Mapping[str, Any]):
        self.model, self.method, self.prune_kw = model, method, dict(prune_kw)
        self.source = api.load(model, input_shapes)
        self.name = str(model) if isinstance(model, (str, os.PathLike)) else (self.source.model.graph.name or "model")
        where = f"--data {data}" if isinstance(data, (str, os.PathLike)) else "data"
        arrays, file_labels = read_data(data, [n for n in model_inputs(self.source)], where)
        self.labels = labels if labels is not None else file_labels
        self.where = where
        self.inputs = validate(arrays, model_inputs(self.source), where)
        self.n_points = int(next(iter(self.inputs.values())).shape[0])
        self.output_names = [o.name for o in self.source.model.graph.output]
        self.runner = ActivationRunner
        self.params0 = self.count(self.source.model)
        self.reference = self.run(self.source.model)

    def run(self, model) -> list[np.ndarray]:
        runner = self.runner(model, self.output_names, self.source.input_shapes)
        out = runner.run(self.inputs)
        return [out[n] for n in self.output_names]

    def count(self, model) -> int:
        params = to_ir(model).params.values() if model is not self.source.model else self.source.graph.params.values()
        if METHODS[self.method].sizes == "weights":  # zeroed, not removed: count what is left
            return int(sum(np.count_nonzero(t.value) for t in params))
        return int(sum(int(np.prod(t.shape, dtype=np.int64)) for t in params))

    def outputs(self, kept: float) -> tuple[list[np.ndarray], int]:
        if kept >= 1.0:
            return self.reference, self.params0
        opts = prune_options(self.method, kept, self.prune_kw)
        if METHODS[self.method].calibrated:
            opts.setdefault("calib", dict(self.inputs))
        result = api.prune(self.model, method=self.method, input_shapes=dict(self.source.input_shapes), **opts)
        return self.run(result.model), self.count(result.model)


class TorchEvaluator(Evaluator):
    def __init__(self, module, data, labels, example_inputs, *, method: str, prune_kw: Mapping[str, Any],
                 batch_size: int = 256):
        import torch

        self.torch, self.module, self.method, self.prune_kw = torch, module, method, dict(prune_kw)
        self.name = type(module).__name__
        self.batch_size = batch_size
        where = f"--data {data}" if isinstance(data, (str, os.PathLike)) else "data"
        self.where = where
        arrays, file_labels = read_torch_data(data, where)
        self.labels = labels if labels is not None else file_labels
        counts = {a.shape[0] for a in arrays}
        if len(counts) != 1:
            raise UsageError(f"{where}: inputs have different numbers of points {sorted(counts)}")
        self.inputs = [torch.as_tensor(a) for a in arrays]
        self.n_points = counts.pop()
        if example_inputs is None:
            example_inputs = tuple(x[:1] for x in self.inputs)
        self.example_inputs = example_inputs
        self.params0 = self.count(module)
        self.reference = self.run(module)

    def count(self, module) -> int:
        return int(sum(p.numel() for p in module.parameters()))

    def run(self, module) -> list[np.ndarray]:
        torch = self.torch
        modes = {m: m.training for m in module.modules()}
        module.eval()
        chunks: list[list[np.ndarray]] = []
        try:
            with torch.no_grad():
                for s in range(0, self.n_points, self.batch_size):
                    out = module(*(x[s:s + self.batch_size] for x in self.inputs))
                    outs = [out] if isinstance(out, torch.Tensor) else [o for o in flatten(out) if isinstance(o, torch.Tensor)]
                    chunks.append([o.detach().float().cpu().numpy() for o in outs])
        finally:
            for m, training in modes.items():
                m.training = training
        return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]

    def outputs(self, kept: float) -> tuple[list[np.ndarray], int]:
        if kept >= 1.0:
            return self.reference, self.params0
        opts = prune_options(self.method, kept, self.prune_kw)
        result = api.prune(self.module, example_inputs=self.example_inputs, method=self.method, **opts)
        return self.run(result.model), self.count(result.model)


def flatten(out) -> list:
    if isinstance(out, Mapping):
        return [v for x in out.values() for v in flatten(x)]
    if isinstance(out, (list, tuple)):
        return [v for x in out for v in flatten(x)]
    return [out]


def read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"{where}: no such file")
    if path.suffix not in (".npz", ".npy"):
        raise UsageError(f"{where}: expected a .npz (arrays named like the model inputs, optionally 'labels') "
                         "or .npy file")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return {"": data}
        with data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise UsageError(f"{where}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def split_labels(data, where: str) -> tuple[Any, np.ndarray | None]:
    """(inputs, labels): a path is read; a dict may hold 'labels'; a (inputs, labels) pair is not guessed."""
    if isinstance(data, (str, os.PathLike)):
        data = read_npz(Path(data), where)
        if set(data) == {""}:
            data = data[""]
    if isinstance(data, Mapping):
        data = dict(data)
        labels = data.pop(LABELS, None)
        if not data:
            raise UsageError(f"{where} holds no model inputs")
        return data, None if labels is None else np.asarray(labels)
    return data, None


def read_data(data, names: list[str], where: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    inputs, labels = split_labels(data, where)
    return as_dict(as_numpy(inputs), names, where), labels


def as_numpy(x):
    if isinstance(x, Mapping):
        return {k: as_numpy(v) for k, v in x.items()}
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def read_torch_data(data, where: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Positional inputs for a module: an array/tensor, a tuple/list of them, or a dict (in forward order)."""
    inputs, labels = split_labels(data, where)
    if isinstance(inputs, Mapping):
        arrays = list(inputs.values())
    elif isinstance(inputs, (list, tuple)):
        arrays = list(inputs)
    else:
        arrays = [inputs]
    arrays = [np.asarray(as_numpy(a)) for a in arrays]
    if any(a.ndim == 0 for a in arrays):
        raise UsageError(f"{where}: inputs need a point axis 0")
    return arrays, None if labels is None else np.asarray(as_numpy(labels))


def prunability(model, data, *, tolerance: float = 0.1, method: str = "magnitude", grid: int | Sequence[float] = 10,
                resolution: float = 0.01, labels=None, accuracy_tolerance: float = 0.005, example_inputs=None,
                input_shapes=None, scope: str = "global", round_to: int = 1, verify: str = "end",
                **options) -> PrunabilityResult:
    """Prunability of ``model`` on ``data`` (see the module docstring).

    ``model``: an ONNX path or proto (pruned by :func:`graphprune.prune`, evaluated in onnxruntime), or a
    ``torch.nn.Module`` (pruned by the torch path, evaluated in torch; ``example_inputs`` default to the first
    data point). ``data``: a ``.npz`` path (arrays named like the model inputs, optionally ``labels``), an array,
    a dict of arrays (may hold ``labels``) or, for a module, a tuple of positional inputs. ``grid``: a number of
    evenly spaced kept fractions or the fractions themselves. Other ``options`` go to :func:`graphprune.prune`.
    """
    if not tolerance >= 0:
        raise UsageError(f"tolerance {tolerance} must be >= 0")
    if not 0 <= accuracy_tolerance < 1:
        raise UsageError(f"accuracy tolerance {accuracy_tolerance} must be in [0, 1)")
    points = kept_grid(grid) if isinstance(grid, (int, np.integer)) else sorted(float(k) for k in grid)
    if 1.0 not in points:
        points.append(1.0)
    prune_kw = dict(scope=scope, round_to=round_to, verify=verify, **options)
    if METHODS[method].sizes == "channels":  # kept is a fraction of channels (the α grid is laid out so)
        prune_kw.setdefault("budget", "channels")
    if METHODS[method].sizes != "rank":
        prune_kw.setdefault("max_group_ratio", default("max_group_ratio"))
    PruneConfig.make(method=method, **{k: v for k, v in prune_kw.items() if k != "calib"})  # options checked once
    if frontend_for(model).kind == "torch":
        ev: Evaluator = TorchEvaluator(model, data, labels, example_inputs, method=method, prune_kw=prune_kw)
    else:
        if example_inputs is not None:
            raise UsageError("example_inputs are for torch modules; an ONNX model takes input_shapes")
        ev = OnnxEvaluator(model, data, labels, method=method, input_shapes=input_shapes, prune_kw=prune_kw)
    labels = ev.labels
    if labels is not None:
        labels = check_labels(labels, ev.reference[0], ev.where)

    measured: dict[float, Point] = {}

    def measure(kept: float) -> Point:
        if kept not in measured:
            outs, params = ev.outputs(kept)
            if labels is not None:
                loss, acc = cross_entropy(outs[0], labels)
            else:
                loss, acc = drift(outs, ev.reference), None
            ratio = 0.0 if kept >= 1 else round(1.0 - kept, 12)
            measured[kept] = Point(kept, ratio, params, params / max(ev.params0, 1), loss, acc)
        return measured[kept]

    base = measure(1.0)
    limit = (1 + tolerance) * base.loss if labels is not None else tolerance
    search = smallest_within(lambda k: measure(k).loss, limit, points, resolution=resolution)
    alpha = measured[search.answer] if search.answer is not None else None
    notes = []
    if search.non_monotone:
        notes.append(f"the loss curve is not monotone: kept fraction(s) {list(search.non_monotone)} below α are "
                     "within tolerance again; α is the edge of the region above which every grid point is within")
    potential = None
    if labels is not None:
        pot = smallest_within(lambda k: base.accuracy - measure(k).accuracy, accuracy_tolerance, points,
                              resolution=resolution)
        potential = measured[pot.answer] if pot.answer is not None else None
        if pot.non_monotone:
            notes.append(f"the accuracy curve is not monotone: kept fraction(s) {list(pot.non_monotone)} below the "
                         "prune potential are within tolerance again")
    sizes = METHODS[method].sizes
    if alpha is not None and sizes == "channels" and scope == "global":
        notes.append("kept is the fraction of channels kept (global ranking); params kept is what that realises")
    if sizes == "budget":
        notes.append(f"kept is the fraction of {prune_kw.get('budget') or 'params'} kept (sampling budget)")
    if sizes == "rank":
        notes.append("kept is each layer's rank fraction (rank_ratio); the ratio column is 1 - kept")
    floor = min(p.params_fraction for p in measured.values())
    if alpha is not None and alpha.params_fraction <= floor and alpha.kept < 1:
        notes.append("α is at the smallest model the method produced on this grid (max_group_ratio caps how much "
                     "of any group may go); the model may be prunable further")
    return PrunabilityResult(
        model=ev.name, method=method, loss_kind="cross_entropy" if labels is not None else "output_drift",
        tolerance=float(tolerance), accuracy_tolerance=float(accuracy_tolerance) if labels is not None else None,
        points=ev.n_points, baseline=base, limit=float(limit), alpha=alpha, potential=potential,
        curve=tuple(measured[k] for k in sorted(measured)),
        options={"grid": points, "resolution": resolution, "method": method,
                 **{k: v for k, v in prune_kw.items() if k != "calib"}},
        notes=tuple(notes))
